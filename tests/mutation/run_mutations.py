"""Single-line mutation testing of the optimizer core and two launch modules (issue 17).

Usage (from the repository root; CPU-heavy: one pytest run per mutant)::

    .venv/bin/python tests/mutation/run_mutations.py --per-file 2 --seed 0
    .venv/bin/python tests/mutation/run_mutations.py --list            # mutants only
    .venv/bin/python tests/mutation/run_mutations.py --files sketchy/grafting.py --per-file 5
    .venv/bin/python tests/mutation/run_mutations.py --files \
        --mutant sketchy/grafting.py:33:45:1.0:2.0     # one mutant (FILE:LINE:COL:OLD:NEW)

A mutant replaces one token of one line: a binary operator by its counterpart
(``+ -``, ``* /``, ``** *``, ``< <=``, ``> >=``, ``== !=``), ``and``/``or``, ``True``/
``False``, a number ``n`` by ``n + 1`` (ints) or ``2 x`` (floats, ``0.0 -> 1.0``), or drops a
unary minus. Docstrings, comments, f-string text and (unless ``--include-defaults``) the
default values of function signatures are never touched. Mutants are drawn
at random (``--seed``) per file and applied, one at a time, to a scratch copy of the
repository (``git archive HEAD``, or the working tree with ``--worktree``) in a temporary
directory; the working tree is never written. For each mutant the file's fast tests run
there (``pytest -x -m "not slow"``, ``PYTHONPATH`` = the scratch copy); a mutant is
*killed* when they fail (or time out), *survives* when they pass. The unmutated copy must
pass first. The report (one line per mutant, then the totals) goes to stdout and, as
JSON, to ``--out``.

Not collected by pytest (the file name does not start with ``test_``).
"""

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tokenize
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]

FAST = ["-m", "not slow"]
CORE = [
    "tests/sketchy/test_dense_reference.py",
    "tests/sketchy/test_options.py",
    "tests/sketchy/test_option_edges.py",
]
TESTS = {
    "sketchy/frequent_directions.py": [
        "tests/sketchy/test_frequent_directions.py",
        "tests/sketchy/test_dense_reference.py",
        "tests/sketchy/test_fidelity_fd.py",  # chunked FD, both inverse-root paths
        "tests/sketchy/test_fd_edges.py",
    ],
    "sketchy/sketchy.py": [*CORE, "tests/sketchy/test_reduction_and_state.py"],
    "sketchy/shampoo.py": [*CORE, "tests/sketchy/test_reduction_and_state.py"],
    "sketchy/kronecker.py": [
        *CORE,
        "tests/launch/test_logging.py",  # optimizer_counters
        "tests/sketchy/test_reduction_and_state.py",
    ],
    "sketchy/grafting.py": [
        *CORE,
        "tests/sketchy/test_memory_bytes.py",
        "tests/sketchy/test_reduction_and_state.py",
    ],
    "launch/checkpointing.py": [
        "tests/launch/test_checkpoint_keep.py",
        "tests/launch/test_checkpoint_corrupt.py",
    ],
    "launch/mesh.py": ["tests/launch/test_multidevice.py"],
}

SWAPS = {
    "+": "-",
    "-": "+",
    "*": "/",
    "/": "*",
    "**": "*",
    "//": "/",
    "%": "//",
    "<": "<=",
    "<=": "<",
    ">": ">=",
    ">=": ">",
    "==": "!=",
    "!=": "==",
    "and": "or",
    "or": "and",
    "True": "False",
    "False": "True",
}
KEYWORDS_BEFORE_UNARY = {"return", "in", "if", "else", "and", "or", "not", "lambda", "yield"}


class Mutant(NamedTuple):
    file: str
    line: int  # 1-based
    col: int
    old: str
    new: str

    def describe(self) -> str:
        new = self.new if self.new else "(removed)"
        return f"{self.file}:{self.line}:{self.col}: {self.old!r} -> {new!r}"

    def apply(self, source: str) -> str:
        lines = source.splitlines(keepends=True)
        text = lines[self.line - 1]
        assert text[self.col : self.col + len(self.old)] == self.old, (self, text)
        lines[self.line - 1] = text[: self.col] + self.new + text[self.col + len(self.old) :]
        return "".join(lines)


def _number_mutation(text: str) -> str | None:
    body = text.replace("_", "")
    try:
        value = int(body, 0)
        return str(value + 1)
    except ValueError:
        pass
    try:
        value = float(body)
    except ValueError:
        return None  # complex literals and the like
    return "1.0" if value == 0 else repr(value * 2)


def mutants_of(path: Path, rel: str, include_defaults: bool = False) -> list[Mutant]:
    source = path.read_text()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    out, fstring_depth, prev = [], 0, None
    signature, depth = False, 0  # inside "def name(...) -> ...:"
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT}
    for tok in tokens:
        if tok.type == tokenize.FSTRING_START:
            fstring_depth += 1
        elif tok.type == tokenize.FSTRING_END:
            fstring_depth -= 1
        if tok.type == tokenize.NAME and tok.string == "def":
            signature, depth = True, 0
        elif signature and tok.string in "([{":
            depth += 1
        elif signature and tok.string in ")]}":
            depth -= 1
        elif signature and tok.string == ":" and depth == 0:
            signature = False
            prev = tok
            continue
        if fstring_depth or tok.type in skip or (signature and not include_defaults):
            if tok.type not in skip:
                prev = tok
            continue
        (line, col), text = tok.start, tok.string
        operand_before = prev is not None and (
            prev.type in (tokenize.NUMBER, tokenize.STRING, tokenize.FSTRING_END)
            or (prev.type == tokenize.NAME and prev.string not in KEYWORDS_BEFORE_UNARY)
            or prev.string in (")", "]")
        )
        if tok.type == tokenize.OP and text in SWAPS:
            if operand_before:
                out.append(Mutant(rel, line, col, text, SWAPS[text]))
            elif text == "-":
                out.append(Mutant(rel, line, col, text, ""))  # drop a unary minus
        elif tok.type == tokenize.NAME and text in SWAPS:
            out.append(Mutant(rel, line, col, text, SWAPS[text]))
        elif tok.type == tokenize.NUMBER:
            new = _number_mutation(text)
            if new is not None:
                out.append(Mutant(rel, line, col, text, new))
        prev = tok
    # Keep the mutants that still compile (e.g. not "*" -> "/" inside a signature).
    valid = []
    for m in out:
        try:
            compile(m.apply(source), rel, "exec")
        except SyntaxError:
            continue
        valid.append(m)
    return valid


def make_scratch(worktree: bool) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="sketchy-mutants-"))
    if worktree:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        for name in filter(None, listed):
            src = ROOT / name.decode()
            if src.is_file():
                dst = scratch / name.decode()
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    else:
        archive = subprocess.run(
            ["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(scratch, filter="data")
    return scratch


def run_tests(scratch: Path, tests: list[str], timeout: float) -> tuple[str, str, float]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(scratch),
        OPENBLAS_NUM_THREADS="1",
        JAX_PLATFORMS="cpu",
        PYTHONDONTWRITEBYTECODE="1",
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *FAST, *tests]
    t0 = time.time()
    try:
        out = subprocess.run(
            cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "killed (timeout)", "", time.time() - t0
    failed = [ln for ln in out.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    if out.returncode == 0:
        return "survived", "", time.time() - t0
    if out.returncode == 5:
        return "error (no tests)", out.stdout[-500:], time.time() - t0
    return "killed", (failed[0] if failed else out.stdout[-300:]), time.time() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="*", default=list(TESTS))
    parser.add_argument("--per-file", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--worktree", action="store_true", help="copy the working tree")
    parser.add_argument("--list", action="store_true", help="print the sampled mutants only")
    parser.add_argument(
        "--include-defaults",
        action="store_true",
        help="also mutate default values in function signatures (the tests pass every "
        "hyperparameter explicitly, so these mostly survive by construction)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    parser.add_argument(
        "--mutant",
        action="append",
        default=[],
        metavar="FILE:LINE:COL:OLD:NEW",
        help="run this mutant too (repeatable; NEW may be empty), e.g. a survivor again",
    )
    args = parser.parse_args()

    # Mutants are drawn from the files of the scratch copy (HEAD, or the working tree).
    scratch = make_scratch(args.worktree)
    rng = random.Random(args.seed)
    sampled: list[Mutant] = []
    for rel in args.files:
        every = mutants_of(scratch / rel, rel, args.include_defaults)
        pick = rng.sample(every, min(args.per_file, len(every)))
        sampled += sorted(pick)
        print(f"{rel}: {len(every)} mutants, sampled {len(pick)}")
    for spec in args.mutant:
        rel, line, col, old, new = spec.split(":", 4)
        found = [
            m
            for m in mutants_of(scratch / rel, rel, include_defaults=True)
            if (m.line, m.col, m.old, m.new) == (int(line), int(col), old, new)
        ]
        if not found:
            shutil.rmtree(scratch, ignore_errors=True)
            parser.error(f"no mutant {spec!r} (lines move: check with --list)")
        sampled += [m for m in found if m not in sampled]
    if args.list:
        shutil.rmtree(scratch, ignore_errors=True)
        for m in sampled:
            print(" ", m.describe())
        return 0

    print(f"scratch copy: {scratch}")
    results = []
    try:
        needed = sorted({t for m in sampled for t in TESTS[m.file]})
        status, detail, secs = run_tests(scratch, needed, args.timeout)
        print(f"baseline (unmutated, {len(needed)} test files): {status} in {secs:.0f} s")
        if status != "survived":
            print(detail)
            return 2
        for i, m in enumerate(sampled, 1):
            target = scratch / m.file
            original = target.read_text()
            target.write_text(m.apply(original))
            try:
                status, detail, secs = run_tests(scratch, TESTS[m.file], args.timeout)
            finally:
                target.write_text(original)
            results.append({**m._asdict(), "status": status, "detail": detail, "seconds": secs})
            print(f"[{i}/{len(sampled)}] {m.describe()}: {status} ({secs:.0f} s) {detail}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    killed = sum(r["status"].startswith("killed") for r in results)
    survived = [r for r in results if r["status"] == "survived"]
    print(f"\nmutants tried {len(results)}, killed {killed}, surviving {len(survived)}")
    for r in survived:
        print(f"  survivor {Mutant(*[r[k] for k in Mutant._fields]).describe()}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
