"""The paper's graph network for ogbg-molpcba (as in AlgoPerf / init2winit), in flax linen.

A stack of ``jraph.GraphNetwork`` blocks over node/edge embeddings of the raw OGB features;
the per-graph ``globals`` carry the 128 task logits out. Size presets are plain data
(:data:`SIZE_PRESETS`), selected by a string so that Hydra can build the model from YAML.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import jraph

# ``paper`` is the init2winit/AlgoPerf GNN (3,554,176 parameters); ``tiny`` runs fast on a CPU.
SIZE_PRESETS: dict[str, dict] = {
    "paper": {"latent_dim": 256, "hidden_dims": (256,), "num_message_passing_steps": 5},
    "tiny": {"latent_dim": 64, "hidden_dims": (64,), "num_message_passing_steps": 3},
}


def resolve_size(
    size: str,
    latent_dim: int | None = None,
    hidden_dims: Sequence[int] | None = None,
    num_message_passing_steps: int | None = None,
) -> dict:
    """Returns the preset ``size`` with any non-``None`` field overriding it.

    Raises:
        ValueError: if ``size`` is not a known preset.
    """
    if size not in SIZE_PRESETS:
        raise ValueError(
            f"Unknown ogbg_molpcba size preset {size!r}; use one of {sorted(SIZE_PRESETS)}."
        )
    cfg = dict(SIZE_PRESETS[size])
    overrides = {
        "latent_dim": latent_dim,
        "hidden_dims": None if hidden_dims is None else tuple(int(d) for d in hidden_dims),
        "num_message_passing_steps": num_message_passing_steps,
    }
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


class MLP(nn.Module):
    """Dense -> LayerNorm -> ReLU -> Dropout per hidden dim, over its concatenated inputs."""

    hidden_dims: Sequence[int]
    dropout_rate: float
    deterministic: bool

    @nn.compact
    def __call__(self, *inputs: jnp.ndarray) -> jnp.ndarray:
        # jraph passes (edges, senders, receivers, globals) etc. as separate arguments.
        x = jnp.concatenate(inputs, axis=-1)
        for dim in self.hidden_dims:
            x = nn.Dense(dim)(x)
            x = nn.LayerNorm()(x)
            x = nn.relu(x)
            x = nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(x)
        return x


class GNN(nn.Module):
    """Graph network of the Sketchy paper's ogbg-molpcba experiments.

    Attributes:
        num_outputs: Number of tasks (logits per graph); also the width of the initial globals.
        latent_dim: Width of the node and edge embeddings.
        hidden_dims: Hidden widths of each edge/node/global update MLP (the last one is the
            new feature width).
        num_message_passing_steps: Number of ``jraph.GraphNetwork`` blocks.
        dropout_rate: Dropout after every MLP layer (active only when ``train``).
    """

    num_outputs: int = 128
    latent_dim: int = 256
    hidden_dims: Sequence[int] = (256,)
    num_message_passing_steps: int = 5
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, *, train: bool) -> jnp.ndarray:
        """Returns logits of shape ``(n_graph, num_outputs)`` (padding graphs included)."""
        # Categorical OGB ids are fed as floats, not one-hot, as in the reference model.
        graph = graph._replace(
            nodes=nn.Dense(self.latent_dim, name="node_embedding")(graph.nodes),
            edges=nn.Dense(self.latent_dim, name="edge_embedding")(graph.edges),
            globals=jnp.zeros((graph.n_node.shape[0], self.num_outputs), graph.nodes.dtype),
        )

        def mlp() -> MLP:
            return MLP(self.hidden_dims, self.dropout_rate, deterministic=not train)

        for _ in range(self.num_message_passing_steps):
            block = jraph.GraphNetwork(
                update_edge_fn=mlp(), update_node_fn=mlp(), update_global_fn=mlp()
            )
            graph = block(graph)
        return nn.Dense(self.num_outputs, name="decoder")(graph.globals)
