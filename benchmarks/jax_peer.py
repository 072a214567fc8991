"""The same MLP workloads in JAX (``jit``), with the same weights, when jax is installed."""

from __future__ import annotations

from typing import Any, Callable


def available() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def mlp(module: Any, act: Callable[[Any], Any]) -> tuple[list[tuple[Any, Any]], Callable[[Any, Any], Any]]:
    """An ``nn.Sequential`` MLP's weights as JAX arrays and ``f(p, x)`` for one sample
    ``[D] -> [d_out]``, with ``act`` between the linear layers."""
    import jax.numpy as jnp

    layers = [(jnp.asarray(m.weight.detach().cpu().numpy()), jnp.asarray(m.bias.detach().cpu().numpy()))
              for m in module if hasattr(m, "weight")]

    def f(p, x):
        for i, (W, b) in enumerate(p):
            x = W @ x + b
            if i < len(p) - 1:
                x = act(x)
        return x

    return layers, f


def step_for(w) -> Callable[[], Any] | None:
    """A jitted JAX step equal to workload ``w``'s, or None where there is no peer (CNN)."""
    import jax
    import jax.numpy as jnp

    if w.name == "cnn_gp":
        return None
    act = {"ReLU": jax.nn.relu, "Tanh": jnp.tanh}[type(w.model[1]).__name__] if len(w.model) > 1 else None
    params, f = mlp(w.model, act)  # one sample [D] -> [d_out]
    batch = [jnp.asarray(t.detach().cpu().numpy()) for t in w.batch]

    scalar = lambda p, x: f(p, x)[0]  # noqa: E731
    if w.name == "jacobian":
        fn = jax.jit(jax.vmap(jax.jacrev(f, argnums=1), in_axes=(None, 0)))
    else:
        def loss(p, *b):
            if w.name in ("seed002", "overhead"):
                X, S = b
                return jnp.mean((jax.vmap(jax.grad(scalar, argnums=1), in_axes=(None, 0))(p, X) - S) ** 2)
            if w.name == "value_fit":
                X, Y = b
                return jnp.mean((jax.vmap(scalar, in_axes=(None, 0))(p, X) - Y) ** 2)
            X, Y, dY = b
            v, g = jax.vmap(jax.value_and_grad(scalar, argnums=1), in_axes=(None, 0))(p, X)
            return jnp.mean((v - Y) ** 2) + jnp.mean((g - dY) ** 2)

        fn = jax.jit(jax.value_and_grad(loss))

    def run():
        out = fn(params, *batch)
        jax.block_until_ready(out)
        return out

    return run
