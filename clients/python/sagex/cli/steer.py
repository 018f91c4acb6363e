"""`sage steer`: a feature's logit lens and steered beside unsteered continuations, through the SDK."""

from __future__ import annotations

from collections.abc import Sequence

from sagex.cli.explain import _fail
from sagex.sdk import FailedPreconditionError, Sage, SageError


def steer(activation: str, sae: str, feature: int, prompts: Sequence[str], strength: float | None,
          target_kl: float | None, mode: str, max_new_tokens: int, temperature: float, seed: int, top_k: int) -> int:
    with Sage(activation=activation, agent=None, scoring=None) as sage:
        try:
            (lens,) = sage.activation.effects(sae, [feature], top_k=top_k)
            result = None
            if prompts:
                result = sage.activation.steer(sae, feature, prompts, strength=strength, target_kl=target_kl, mode=mode,
                                               max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        except FailedPreconditionError as exc:
            raise SystemExit(f"sage steer: {exc.message}; e.g. `sage serve activation --steering`") from None
        except SageError as exc:
            raise _fail("steer", exc, "activation", activation) from None
    print(f"feature {feature} (decoder norm {lens.decoder_norm:.3g}), logit lens:")
    print("  promotes:   " + ", ".join(f"{e.text!r} {e.value:+.2f}" for e in lens.promoted))
    print("  suppresses: " + ", ".join(f"{e.text!r} {e.value:+.2f}" for e in lens.suppressed))
    if result is None:
        return 0
    how = "clamped to" if mode == "clamp" else "strength"
    target = f" (target KL {target_kl:g}{'' if result.target_reached else ', not reached'})" if target_kl else ""
    print(f"\n{how} {result.strength:.4g}{target}, mean KL {result.mean_kl:.3f} nats")
    for c in result.completions:
        print(f"\n  prompt:    {c.prompt!r}  (KL {c.kl:.3f})")
        print(f"  unsteered: {c.unsteered!r}")
        print(f"  steered:   {c.steered!r}")
    return 0
