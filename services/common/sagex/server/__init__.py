"""Server kit shared by the activation, agent and scoring services: errors as rich
gRPC statuses, structured logs with request ids, token auth and TLS, limits,
Prometheus metrics, and the server lifecycle."""
