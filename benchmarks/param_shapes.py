"""Parameter shape sets for the optimizer benchmarks."""

import math


def resnet50_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Flax-layout (HWIO) parameter shapes of ResNet-50 v1 (25,557,032 parameters).

    Derived from the architecture (stem 7x7/2 conv, bottleneck stages (3, 4, 6, 3) of
    widths 64..512 with 4x expansion, projection shortcuts, BatchNorm scale/bias, dense
    head) so the benchmark does not need the ImageNet workload.
    """
    shapes: dict[str, tuple[int, ...]] = {"stem/conv": (7, 7, 3, 64)}
    shapes |= {"stem/bn/scale": (64,), "stem/bn/bias": (64,)}
    cin = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for b in range(blocks):
            name = f"stage{stage}/block{b}"
            convs = [(1, 1, cin, width), (3, 3, width, width), (1, 1, width, 4 * width)]
            for i, s in enumerate(convs):
                shapes[f"{name}/conv{i}"] = s
                shapes[f"{name}/bn{i}/scale"] = (s[-1],)
                shapes[f"{name}/bn{i}/bias"] = (s[-1],)
            if b == 0:
                shapes[f"{name}/proj"] = (1, 1, cin, 4 * width)
                shapes[f"{name}/proj_bn/scale"] = (4 * width,)
                shapes[f"{name}/proj_bn/bias"] = (4 * width,)
            cin = 4 * width
    shapes |= {"head/kernel": (cin, num_classes), "head/bias": (num_classes,)}
    return shapes


def small_set() -> dict[str, tuple[int, ...]]:
    """The set on which the reference implementations were measured (1.31 M parameters)."""
    return {"w1": (512, 512), "w2": (512, 2048), "b": (2048,)}


def toy_set() -> dict[str, tuple[int, ...]]:
    """A matrix and a bias (136 parameters): a smoke run of the benchmark in seconds."""
    return {"w": (16, 8), "b": (8,)}


SETS = {"small": small_set, "resnet50": resnet50_shapes, "toy": toy_set}


def count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())
