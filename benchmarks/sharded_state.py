"""Per-device optimizer memory and step time, state sharded vs replicated, N = 1, 2, 4, 8.

One run, on N virtual CPU devices (``--xla_force_host_platform_device_count``, set here
before JAX starts). For each parameter set (``resnet50``: ResNet-50's 161 tensors;
``gnn``: the ogbg-molpcba GraphNetwork at paper size) and each N, the optimizer step
(``tx.update`` + ``apply_updates``: statistics every step, a refresh every ``F`` steps) is
jitted on a ``data`` mesh of the first N devices three times: with the state replicated;
sharded by :mod:`sketchy.sharding` (parameters and gradients replicated, as after the
data-parallel all-reduce; state split over ``data``), decompositions placed by XLA; and
sharded with the decompositions split over the devices by blocks (``block_sharding``:
what the trainer's ``mesh=data`` does). Printed per N: optimizer bytes per device (summed
from the arrays' shards on each device), the ratio sharded / replicated, the median steady
and refresh step, the amortized step ``((F - 1) steady + refresh) / F``, its ratio split /
replicated, and the refresh ratio split / sharded (what splitting by blocks buys where a
group's block count is not a multiple of N).

Reading the times: the N virtual devices share this machine's cores, so a replicated state
makes each of them repeat the whole update (N times the work of one), while a sharded one
splits it. On real devices the replicated update runs in parallel, and what sharding saves
is memory and the redundant refresh; the ratio here bounds the partitioning overhead.

    python benchmarks/sharded_state.py                        # resnet50 and gnn, N = 1 2 4 8
    python benchmarks/sharded_state.py --sets toy --devices 1 2 --cycles 1
"""

import argparse
import functools
import os
import sys

# Before JAX starts: N virtual devices, single-threaded OpenBLAS (JAX's CPU LAPACK
# busy-waits its threads, which makes decompositions erratic next to other work).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _FLAGS:
    os.environ["XLA_FLAGS"] = (_FLAGS + " --xla_force_host_platform_device_count=8").strip()

import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from param_shapes import SETS as SHAPE_SETS  # noqa: E402
from step_timing import time_cycles  # noqa: E402

import sketchy  # noqa: E402
from sketchy import sharding  # noqa: E402

F = 10  # update_freq (the paper's)


def gnn_shapes() -> dict[str, tuple[int, ...]]:
    """The ogbg-molpcba GraphNetwork's parameter shapes at paper size (3,554,176)."""
    from workloads.ogbg_molpcba import OgbgMolpcba

    params, _ = jax.eval_shape(OgbgMolpcba(size="paper").init, jax.random.key(0))
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in flat}


SETS = {**SHAPE_SETS, "gnn": gnn_shapes}


def optimizer(name: str, rank: int, block_sharding=None) -> optax.GradientTransformation:
    common = dict(
        update_freq=F, start_preconditioning_step=0, block_size=1024, block_sharding=block_sharding
    )
    if name == "shampoo":
        return sketchy.shampoo(1e-3, **common)
    return sketchy.sketchy(1e-3, rank=rank, **common)


def stored_per_device(tree) -> int:
    """The largest number of bytes of ``tree`` that any one device holds."""
    per = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            per[shard.device] = per.get(shard.device, 0) + shard.data.nbytes
    return max(per.values())


LAYOUTS = ("replicated", "sharded", "split")


def measure(make_tx, shapes: dict, n: int, layout: str, cycles: int) -> dict:
    """Bytes per device and step times on a ``data`` mesh of the first n devices; ``layout``:
    ``replicated`` state, ``sharded`` state (decompositions where XLA puts them), or
    ``split``: sharded, with the decompositions split over devices by blocks
    (``block_sharding``, what the trainer does)."""
    # Auto axes (as the trainer's mesh): shardings propagate from the jit's in/out shardings.
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])
    repl = NamedSharding(mesh, PartitionSpec())
    split = n > 1 and layout == "split"
    tx = make_tx(block_sharding=NamedSharding(mesh, PartitionSpec("data")) if split else None)
    keys = jax.random.split(jax.random.key(0), len(shapes))
    params = {k: jax.device_put(jnp.zeros(s, jnp.float32), repl) for k, s in shapes.items()}
    grads = {
        k: jax.device_put(jax.random.normal(key, s), repl)
        for key, (k, s) in zip(keys, shapes.items(), strict=True)
    }
    abstract = jax.eval_shape(tx.init, params)
    if layout != "replicated":
        state_shardings = sharding.named(mesh, sharding.state_specs(abstract, mesh))
    else:
        state_shardings = jax.tree.map(lambda _: repl, abstract)
    state = jax.jit(tx.init, out_shardings=state_shardings)(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    t0 = time.perf_counter()
    fn = jax.jit(step, out_shardings=(repl, state_shardings), donate_argnums=(0, 1))
    fn = fn.lower(params, state, grads).compile()
    compile_s = time.perf_counter() - t0
    steady_s, refresh_s, (params, state) = time_cycles(
        lambda c: fn(*c, grads), (params, state), cycles, F
    )
    return {
        "bytes": stored_per_device(state),
        "compile_s": compile_s,
        "steady_ms": 1e3 * steady_s,
        "refresh_ms": 1e3 * refresh_s,
        "amortized_ms": 1e3 * ((F - 1) * steady_s + refresh_s) / F,
    }


def table(set_name: str, make_tx, shapes: dict, devices: list[int], cycles: int) -> dict:
    print(f"\n## {set_name}: {len(shapes)} tensors, {sum(map(np.prod, shapes.values())):,.0f}"
          " parameters\n")  # fmt: skip
    header = ["N", "replicated MB/device", "sharded MB/device", "sharded / replicated",
              "sharded / (N=1)", "replicated ms (steady, refresh, amortized)",
              "sharded ms (steady, refresh, amortized)",
              "sharded + split decompositions ms (steady, refresh, amortized)",
              "step split / replicated", "refresh split / sharded"]  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    rows = {}
    for n in devices:
        rows[n] = {k: measure(make_tx, shapes, n, k, cycles) for k in LAYOUTS}
        rep, sh, sp = (rows[n][k] for k in LAYOUTS)
        one = sh["bytes"] / rows[1]["sharded"]["bytes"] if 1 in rows else float("nan")

        def ms(r):
            return f"{r['steady_ms']:.1f}, {r['refresh_ms']:.1f}, {r['amortized_ms']:.1f}"

        print(f"| {n} | {rep['bytes'] / 2**20:.2f} | {sh['bytes'] / 2**20:.2f} | "
              f"{sh['bytes'] / rep['bytes']:.3f} | {one:.3f} | {ms(rep)} | {ms(sh)} | {ms(sp)} | "
              f"{sp['amortized_ms'] / rep['amortized_ms']:.2f} | "
              f"{sp['refresh_ms'] / sh['refresh_ms']:.2f} |", flush=True)  # fmt: skip
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=["resnet50", "gnn"], choices=sorted(SETS))
    ap.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--optimizer", default="sketchy", choices=["sketchy", "shampoo"])
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--cycles", type=int, default=1, help="refresh cycles of F steps")
    args = ap.parse_args(argv)
    if max(args.devices) > jax.device_count():
        raise SystemExit(
            f"error: --devices {max(args.devices)} but only {jax.device_count()} devices: "
            f"unset XLA_FLAGS (this script asks for 8 virtual CPU devices) or use fewer"
        )
    make_tx = functools.partial(optimizer, args.optimizer, args.rank)
    name = args.optimizer + (f" r{args.rank}" if args.optimizer == "sketchy" else "")
    print(f"# {name}, block_size 1024, update_freq {F}; jax {jax.__version__}, "
          f"{platform.processor() or platform.machine()} {os.cpu_count()} cpus, "
          f"{jax.device_count()} virtual devices")  # fmt: skip
    return {s: table(s, make_tx, SETS[s](), args.devices, args.cycles) for s in args.sets}


if __name__ == "__main__":
    main()
