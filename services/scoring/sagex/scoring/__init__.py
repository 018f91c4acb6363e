"""The scoring service's library: scorers that measure how well an explanation
predicts an SAE feature, the statistics behind them, and a single-pass baseline
explainer. Plain Python; ``servicer`` only translates to and from gRPC."""
