"""Seeded random projections of gradient vectors (docs/design.md, "Random projection").

Component c of a run with ``--seed S`` is projected with seed ``component_seed(S, c)``; every
random draw inside a Projector derives from that seed with ``derive_seed``.

``Projector(n_in, n_out, method, seed).project(x[..., n_in]) -> [..., n_out]`` (float32), with
E|p|² = |x|² for every method:

- ``gaussian``: dense i.i.d. N(0, 1) matrix R [n_in, n_out], p = x R / sqrt(n_out) (TRAK
  BasicProjector semantics plus the 1/sqrt(d) factor). R is never materialised: it is generated
  in blocks of ``block`` input rows, block i from its own ``torch.Generator`` seeded with
  ``derive_seed(seed, GAUSSIAN_TAG, i)``, so R depends only on (n_in, n_out, seed, block), never
  on the batch. The generator runs on ``device``: CPU and CUDA give different (each
  deterministic) matrices.
- ``sjlt``: sparse JL / CountSketch: input coordinate j goes to s output rows, one in each of s
  contiguous row ranges [a, a + L), with independent signs ±1/sqrt(s). The hash is
  *block-structured*: coordinates are taken in groups of ``width`` = 16 consecutive ones (1 where
  L < 16); group g draws one uniform cyclic offset u_g in [0, L) per row range, and coordinate
  ``g * width + r`` goes to row ``a + (u_g + r) mod L``, each with its own random sign. Every
  coordinate's row is uniform and two coordinates in different groups collide with probability
  exactly 1/L, as with a fully random hash; two in the same group never collide. With the signs
  independent per coordinate, every inner-product estimate is unbiased and its variance is never
  larger than a fully random CountSketch's (it drops the same-group collision terms, each
  (x_i y_j + x_j y_i)² / L >= 0). One int64 table entry ``u_g << 16 | sign bits`` serves a group
  (0.5 byte per coordinate), drawn from seeded CPU ``torch.Generator`` blocks
  (``derive_seed(seed, SJLT_TAG, i)``), never Python's salted ``hash()``, so tables are identical
  across processes and devices (on CUDA ``index_add_`` may add in a different order, so outputs
  can differ in the last bits). Applied on CPU by a numba kernel (``engine.sketch_kernel``),
  elsewhere with ``index_add_``: O(n_in · s) per vector. The table is cached on the Projector
  when n_in · s <= ``cache_limit`` (default 2^25, which covers every SmolLM2 component); larger
  ones are redrawn on each call.
- ``trak``: TRAK's own projector (BasicProjector on CPU, CudaProjector on CUDA), scaled by
  1/sqrt(n_out); only where the ``traker`` package (module ``trak``) is importable.

``build_projections`` gives a run's projectors, one ``ProjectionSet`` per ``--project`` entry
(``parse_projections``), for the ``GradientEngine``. ``parse_index`` reads ``--index``: the
methods ``--project`` takes, a fixed size per component (``sjlt:d64``: d_c = min(64, P_c)) and
``exact:NAME+NAME`` (the named components' dense gradients), each optionally stored as float16
(``sjlt:d64:float16``); ``build_index_sets`` gives the projections an index needs beyond those
of ``--project`` (same seeds, so a method in both is computed once).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from gradlens.engine import sketch_kernel
from gradlens.engine.capture import ProjectionSet
from gradlens.errors import GradLensError
from gradlens.models.loading import Component

__all__ = [
    "IndexSpec",
    "KroneckerSketch",
    "Projector",
    "available_methods",
    "build_index_sets",
    "build_projections",
    "component_dims",
    "component_seed",
    "derive_seed",
    "method_label",
    "parse_index",
    "parse_index_spec",
    "parse_project_spec",
    "parse_projections",
]

GAUSSIAN_TAG = 0x6761
SJLT_TAG = 0x736A
KRON_TAG = 0x6B72
#: Vectors per call of TRAK's CudaProjector (its own batching unit).
TRAK_CUDA_BATCH = 8
#: Elements of one generated Gaussian block (rows = max(1, this // n_out)); part of R's definition.
GAUSSIAN_BLOCK_ELEMENTS = 1 << 22
#: Input coordinates per generated SJLT hash block; part of the sketch's definition.
SJLT_BLOCK = 1 << 22
#: Consecutive coordinates sharing one SJLT offset (where every row range has >= this many rows).
SJLT_WIDTH = 16

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(*parts: int) -> int:
    """A 63-bit generator seed from integers (splitmix64 chain; same in every process)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & ((1 << 63) - 1)


def _trak_available() -> bool:
    return importlib.util.find_spec("trak") is not None


def available_methods() -> tuple[str, ...]:
    """Projection methods usable here: gaussian, sjlt, kron, plus trak when ``traker`` is
    installed."""
    base = ("gaussian", "sjlt", "kron")
    return base + ("trak",) if _trak_available() else base


@dataclass(frozen=True, eq=False)
class Projector:
    """Random projection R^n_in -> R^n_out (see module docstring). ``block`` (input coordinates
    per generated block) defaults per method and is part of the projection's definition."""

    n_in: int
    n_out: int
    method: str = "sjlt"
    seed: int = 0
    s: int = 1
    device: str = "cpu"
    block: int | None = None
    cache_limit: int = 1 << 25
    _cache: dict[tuple, object] = field(default_factory=dict, init=False, repr=False)
    _trak: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_in < 1 or self.n_out < 1:
            raise ValueError(f"n_in and n_out must be positive, got {self.n_in}, {self.n_out}")
        if self.method not in ("gaussian", "sjlt", "trak"):
            raise ValueError(f"unknown projection method {self.method!r} (gaussian, sjlt, trak)")
        if self.method == "sjlt" and not 1 <= self.s <= self.n_out:
            raise ValueError(f"sjlt needs 1 <= s <= n_out, got s={self.s}, n_out={self.n_out}")
        if self.block is None:
            default = (
                max(1, GAUSSIAN_BLOCK_ELEMENTS // self.n_out)
                if self.method == "gaussian"
                else SJLT_BLOCK
            )
            object.__setattr__(self, "block", default)
        elif self.block < 1:
            raise ValueError(f"block must be positive, got {self.block}")
        if self.method == "trak":
            object.__setattr__(self, "_trak", self._make_trak())

    # ---------------------------------------------------------------- random blocks

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n_in / self.block)

    def _rows(self, i: int) -> tuple[int, int]:
        lo = i * self.block
        return lo, min(self.n_in, lo + self.block)

    def gaussian_block(self, i: int) -> torch.Tensor:
        """Unscaled N(0, 1) rows [lo:hi] of R for block i: float32 [hi - lo, n_out] on device."""
        lo, hi = self._rows(i)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.seed, GAUSSIAN_TAG, i))
        return torch.randn(
            (hi - lo, self.n_out), generator=gen, dtype=torch.float32, device=self.device
        )

    @property
    def width(self) -> int:
        """Consecutive input coordinates that share one SJLT table entry (16, or 1 when a row
        range has fewer than 16 rows)."""
        return SJLT_WIDTH if self.n_out // self.s >= SJLT_WIDTH else 1

    def _row_range(self, r: int) -> tuple[int, int]:
        """Output rows [a, a + L) of the r-th of the s nonzeros."""
        a = r * self.n_out // self.s
        return a, (r + 1) * self.n_out // self.s - a

    def _draw_sjlt(self, i: int) -> torch.Tensor:
        """Block i's table, int64 [s, ceil((hi - lo) / width)], freshly drawn on the CPU: entry
        ``u << 16 | bits`` drawn uniformly from [0, L << 16) gives a uniform offset u in [0, L)
        and 16 independent fair sign bits (bit r set: coordinate r of the group is negated)."""
        lo, hi = self._rows(i)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(derive_seed(self.seed, SJLT_TAG, i))
        n_groups = -(-(hi - lo) // self.width)
        table = torch.empty((self.s, n_groups), dtype=torch.int64)
        for r in range(self.s):
            _, length = self._row_range(r)
            table[r] = torch.randint(0, length << 16, (n_groups,), generator=gen)
        return table

    def _cached(self, key: tuple, make):
        out = self._cache.get(key)
        if out is None:
            out = make()
            if self.n_in * self.s <= self.cache_limit:
                self._cache[key] = out
        return out

    def sjlt_block(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block i's table expanded per coordinate: rows int64 [s, hi - lo] and signs float32
        [s, hi - lo] (±1/sqrt(s)), on ``device`` (the ``index_add_`` path)."""

        def make():
            lo, hi = self._rows(i)
            table = self._draw_sjlt(i)
            j = torch.arange(hi - lo)
            group, lane = j // self.width, j % self.width
            idx = torch.empty((self.s, hi - lo), dtype=torch.int64)
            sign = torch.empty((self.s, hi - lo), dtype=torch.float32)
            for r in range(self.s):
                a, length = self._row_range(r)
                code = table[r, group]
                idx[r] = a + ((code >> 16) + lane) % length
                sign[r] = (1.0 - 2.0 * ((code >> lane) & 1).to(torch.float32)) / math.sqrt(self.s)
            return idx.to(self.device), sign.to(self.device)

        return self._cached(("table", i), make)

    def sjlt_table(self, i: int) -> np.ndarray:
        """Block i's table for the CPU kernel: int64 [s, ceil((hi - lo) / width)]."""

        def make():
            table = self._draw_sjlt(i).numpy()
            for r in range(self.s):  # once per draw, not per projection
                sketch_kernel.check_table(table[r], self._row_range(r)[1])
            return table

        return self._cached(("codes", i), make)

    def matrix(self) -> torch.Tensor:
        """The full scaled matrix [n_in, n_out] with p = x @ matrix() (small sizes only: tests)."""
        if self.method == "gaussian":
            blocks = [self.gaussian_block(i) for i in range(self.n_blocks)]
            return torch.cat(blocks) / math.sqrt(self.n_out)
        if self.method == "sjlt":
            return self.project(torch.eye(self.n_in, dtype=torch.float32, device=self.device))
        raise ValueError("matrix() is only defined for gaussian and sjlt")

    # ---------------------------------------------------------------- projection

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Project x[..., n_in] (cast to float32) to [..., n_out] float32 on ``device``."""
        if x.shape[-1] != self.n_in:
            raise ValueError(f"expected last dimension {self.n_in}, got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.n_in).to(device=self.device, dtype=torch.float32)
        if self.method == "gaussian":
            out = torch.zeros((x2.shape[0], self.n_out), dtype=torch.float32, device=self.device)
            for i in range(self.n_blocks):
                lo, hi = self._rows(i)
                out.addmm_(x2[:, lo:hi], self.gaussian_block(i))
            out /= math.sqrt(self.n_out)
        elif self.method == "sjlt":
            if x2.device.type == "cpu" and sketch_kernel.available():
                # one accumulator per row of x across all blocks; summed once at the end
                acc = np.zeros((x2.shape[0], sketch_kernel.CHUNKS, self.n_out), dtype=np.float32)
                for i in range(self.n_blocks):
                    lo, hi = self._rows(i)
                    xn = x2[:, lo:hi].detach().numpy()
                    for r, table in enumerate(self.sjlt_table(i)):
                        a, length = self._row_range(r)
                        for j in range(x2.shape[0]):
                            sketch_kernel.accumulate(
                                xn[j], table, a, length, self.width, acc[j], table_checked=True
                            )
                out = torch.from_numpy(acc.sum(1))
                if self.s > 1:
                    out /= math.sqrt(self.s)
            else:
                out = torch.zeros(
                    (x2.shape[0], self.n_out), dtype=torch.float32, device=self.device
                )
                for i in range(self.n_blocks):
                    lo, hi = self._rows(i)
                    idx, sign = self.sjlt_block(i)
                    for r in range(self.s):
                        out.index_add_(1, idx[r], x2[:, lo:hi] * sign[r])
        else:
            out = self._trak.project(x2, model_id=0).to(torch.float32) / math.sqrt(self.n_out)
        return out.reshape(*lead, self.n_out)

    def _make_trak(self) -> object:
        if not _trak_available():
            raise ValueError(
                "projection method 'trak' needs the traker package (pip install traker)"
            )
        from trak.projectors import BasicProjector, CudaProjector, ProjectionType

        common = dict(
            grad_dim=self.n_in,
            proj_dim=self.n_out,
            seed=self.seed % (1 << 30),  # TRAK adds offsets to the seed; fast_jl takes a C int
            proj_type=ProjectionType.normal,
            device=self.device,
        )
        if str(self.device).startswith("cuda"):
            return CudaProjector(**common, max_batch_size=TRAK_CUDA_BATCH)
        return BasicProjector(**common, dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class KroneckerSketch:
    """Kronecker CountSketch of a matrix gradient g[r, c] (LoGra-style): p = vec(S_r g S_cᵀ).

    S_r [m_r, r] and S_c [m_c, c] are CountSketches (one ±1 per column, seeded by
    ``derive_seed(seed, KRON_TAG)``); m_r = min(r, isqrt(n_out)), m_c = min(c, n_out // m_r), so
    m_r·m_c <= n_out and the remaining outputs are zero. E|p|² = |g|². For g = dᵀx (d[n, r],
    x[n, c]) S_r g S_cᵀ = (d S_rᵀ)ᵀ (x S_cᵀ): computed from the factors without forming g, in
    O(n·(r + c) + n·m_r·m_c) instead of O(n·r·c). The price: on low-rank gradients its error is
    larger than a CountSketch's of the same size (measured in benchmarks/RESULTS.md).
    """

    shape: tuple[int, int]
    n_out: int
    seed: int = 0
    device: str = "cpu"
    dims: tuple[int, int] = field(init=False)
    _tables: tuple[torch.Tensor, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        r, c = self.shape
        if r < 1 or c < 1 or self.n_out < 1:
            raise ValueError(f"bad Kronecker sketch shape {self.shape} -> {self.n_out}")
        m_r = min(r, max(1, math.isqrt(self.n_out)))
        m_c = min(c, self.n_out // m_r)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(derive_seed(self.seed, KRON_TAG))
        tables = []
        for n, m in ((r, m_r), (c, m_c)):
            idx = torch.randint(0, m, (n,), generator=gen)
            sign = torch.randint(0, 2, (n,), generator=gen).to(torch.float32) * 2.0 - 1.0
            tables += [idx.to(self.device), sign.to(self.device)]
        object.__setattr__(self, "dims", (m_r, m_c))
        object.__setattr__(self, "_tables", tuple(tables))

    def _sketch_cols(self, a: torch.Tensor, which: int) -> torch.Tensor:
        """CountSketch the last dimension of a[..., r or c] with S_r (0) or S_c (1)."""
        idx, sign = self._tables[2 * which], self._tables[2 * which + 1]
        out = torch.zeros((*a.shape[:-1], self.dims[which]), dtype=torch.float32, device=a.device)
        return out.index_add_(a.dim() - 1, idx, a.float() * sign)

    def _pad(self, z: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((*z.shape[:-2], self.n_out), dtype=torch.float32, device=z.device)
        out[..., : self.dims[0] * self.dims[1]] = z.reshape(*z.shape[:-2], -1)
        return out

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Dense reference: x[..., r*c] (row-major g) -> [..., n_out] float32."""
        r, c = self.shape
        g = x.reshape(*x.shape[:-1], r, c).to(self.device)
        right = self._sketch_cols(g, 1)  # g S_cᵀ: [..., r, m_c]
        both = self._sketch_cols(right.transpose(-1, -2), 0)  # (S_r g S_cᵀ)ᵀ: [..., m_c, m_r]
        return self._pad(both.transpose(-1, -2))

    def project_factored(self, d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """p for g = dᵀx with d[n, r], x[n, c], without forming g: (S_r dᵀ)(S_c xᵀ)ᵀ."""
        return self._pad(self._sketch_cols(d, 0).T @ self._sketch_cols(x, 1))

    def project_rows(self, ids: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """p for the embedding-lookup gradient whose row ids[t] receives e[t] (e[n, c])."""
        idx, sign = self._tables[0], self._tables[1]
        rows = torch.zeros((len(ids), self.dims[0]), dtype=torch.float32, device=e.device)
        rows[torch.arange(len(ids), device=e.device), idx[ids]] = sign[ids]  # = onehot S_rᵀ
        return self._pad(rows.T @ self._sketch_cols(e, 1))


# -------------------------------------------------------------------- specs and dimensions


def component_dims(n_params: Sequence[int], fraction: float) -> list[int]:
    """Projected dimension per component: d_c = max(1, round(fraction · P_c)) (Python round)."""
    if not 0 < fraction <= 1 or not math.isfinite(fraction):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return [max(1, round(fraction * int(p))) for p in n_params]


#: Spacing of per-component projection seeds: component c of a run with seed S uses
#: ``S * COMPONENT_SEED_STRIDE + c`` (a prime larger than any component count, so seeds of
#: different runs' components do not coincide). Part of every stored projection's definition.
COMPONENT_SEED_STRIDE = 100_003


def component_seed(seed: int, component_idx: int) -> int:
    """The Projector seed of component ``component_idx`` in a run with ``--seed seed``."""
    return seed * COMPONENT_SEED_STRIDE + component_idx


def method_label(method: str, fraction: float) -> str:
    """The ``dots.method`` label of a projection, e.g. ``sjlt:0.01``."""
    return f"{method}:{fraction:g}"


def parse_project_spec(spec: str) -> list[tuple[str, float]]:
    """Parse ``"sjlt:0.01,gaussian:0.001"`` into ``[("sjlt", 0.01), ("gaussian", 0.001)]``.

    Raises ValueError for an unknown method (gaussian, sjlt, kron; trak only where traker is
    installed), a fraction outside (0, 1], a malformed or repeated entry."""
    methods = available_methods()
    usage = f"expected METHOD:FRACTION[,...] with METHOD one of {', '.join(methods)}"
    out: list[tuple[str, float]] = []
    for item in spec.split(","):
        item = item.strip()
        method, sep, frac = item.partition(":")
        method, frac = method.strip(), frac.strip()
        if not item or not sep or not method or not frac:
            raise ValueError(f"bad projection spec {item!r} in {spec!r}: {usage}")
        if method not in methods:
            hint = " (install traker for trak)" if method == "trak" else ""
            raise ValueError(f"unknown projection method {method!r} in {spec!r}{hint}: {usage}")
        try:
            fraction = float(frac)
        except ValueError:
            raise ValueError(f"bad fraction {frac!r} in {spec!r}: {usage}") from None
        if not math.isfinite(fraction) or not 0 < fraction <= 1:
            raise ValueError(f"fraction {frac!r} in {spec!r} must be in (0, 1]")
        if (method, fraction) in out:
            raise ValueError(f"projection {method}:{frac} is listed twice in {spec!r}")
        out.append((method, fraction))
    return out


def parse_projections(project: str | None) -> list[tuple[str, float]]:
    """``--project``'s value as [(method, fraction), ...] ([] when not given); GradLensError
    naming the option otherwise."""
    if not project:
        return []
    try:
        return list(parse_project_spec(project))
    except ValueError as exc:
        raise GradLensError(f"--project: {exc}") from None


def build_projections(
    specs: Sequence[tuple[str, float]], components: Sequence[Component], seed: int, net
) -> list[ProjectionSet]:
    """The engine's projections for ``--project`` specs [(method, fraction), ...]: component c
    gets ``Projector(P_c, d_c, method, seed=component_seed(seed, c))`` on the model's device, or
    for ``kron`` a ``KroneckerSketch`` of its gradient oriented [out, in], applied to the
    factors."""
    return [
        _projection_set(
            method_label(method, fraction),
            method,
            component_dims([c.n_params for c in components], fraction),
            components,
            seed,
            net,
        )
        for method, fraction in specs
    ]


def _projection_set(
    label: str, method: str, dims: Sequence[int], components: Sequence[Component], seed: int, net
) -> ProjectionSet:
    """One method's projectors with d_c = ``dims[c]`` (see ``build_projections``)."""
    device = str(next(net.parameters()).device)
    if method == "kron":
        modules = dict(net.named_modules())
        sketches = [
            KroneckerSketch(_term_shape(c, modules[c.module]), d, component_seed(seed, idx), device)
            for idx, (c, d) in enumerate(zip(components, dims))
        ]
        return ProjectionSet(label, [k.project for k in sketches], factored=sketches)
    projectors = [
        Projector(c.n_params, d, method, seed=component_seed(seed, idx), device=device).project
        for idx, (c, d) in enumerate(zip(components, dims))
    ]
    return ProjectionSet(label, projectors)


# -------------------------------------------------------------------- index specs

#: Storage types an index entry may name after its method (default float32).
INDEX_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class IndexSpec:
    """One ``--index`` entry. ``label``: the method as the index records it (``sjlt:0.01``,
    ``sjlt:d64``, ``exact:L6.gate+L23.q``); ``method``: gaussian, sjlt, kron or exact;
    ``fraction`` (``METHOD:F``) or ``dim`` (``METHOD:dN``, d_c = min(N, P_c)) for projections;
    ``names``: the components of ``exact``; ``dtype``: float32 or float16."""

    label: str
    method: str
    fraction: float | None = None
    dim: int | None = None
    names: tuple[str, ...] = ()
    dtype: str = "float32"

    def dims(self, components: Sequence[Component]) -> list[int]:
        """d_c of every component the entry holds (``index_components`` order)."""
        if self.method == "exact":
            return [components[c].n_params for c in self.index_components(components)]
        if self.dim is not None:
            return [min(self.dim, c.n_params) for c in components]
        return component_dims([c.n_params for c in components], self.fraction)

    def index_components(self, components: Sequence[Component]) -> list[int]:
        """component_idx held: the named ones for ``exact`` (ascending), else all; ValueError
        naming an unknown component."""
        if self.method != "exact":
            return list(range(len(components)))
        where = {c.name: i for i, c in enumerate(components)}
        unknown = [n for n in self.names if n not in where]
        if unknown:
            some = ", ".join(c.name for c in components[:4])
            raise ValueError(
                f"{self.label}: the model has no component {unknown[0]!r} (names like {some}, ...)"
            )
        return sorted(where[n] for n in self.names)


def parse_index_spec(spec: str) -> list[IndexSpec]:
    """Parse ``"sjlt:d64,exact:L6.gate+L23.q:float16"`` into IndexSpecs; ValueError for an
    unknown method, a bad fraction or size, an empty name list or a repeated entry."""
    methods = tuple(m for m in available_methods() if m != "trak") + ("exact",)
    usage = (
        "expected METHOD:FRACTION, METHOD:dN or exact:NAME+NAME, each optionally followed by "
        f":float16, with METHOD one of {', '.join(methods[:-1])}"
    )
    out: list[IndexSpec] = []
    for item in spec.split(","):
        item = item.strip()
        body, dtype = item, "float32"
        for d in INDEX_DTYPES:
            if item.endswith(":" + d):
                body, dtype = item[: -len(d) - 1], d
        method, sep, arg = (p.strip() for p in body.partition(":"))
        if not item or not sep or not arg:
            raise ValueError(f"bad index entry {item!r} in {spec!r}: {usage}")
        if method not in methods:
            raise ValueError(f"unknown index method {method!r} in {spec!r}: {usage}")
        entry = _index_entry(method, arg, dtype, usage)
        if entry.label in [e.label for e in out]:
            raise ValueError(f"index {entry.label} is listed twice in {spec!r}")
        out.append(entry)
    return out


def _index_entry(method: str, arg: str, dtype: str, usage: str) -> IndexSpec:
    if method == "exact":
        names = tuple(n.strip() for n in arg.split("+"))
        if not all(names) or len(set(names)) != len(names):
            raise ValueError(f"bad component list {arg!r} for exact: {usage}")
        return IndexSpec(f"exact:{'+'.join(names)}", "exact", names=names, dtype=dtype)
    if arg.startswith("d"):
        if not arg[1:].isdigit() or int(arg[1:]) < 1:
            raise ValueError(f"bad size {arg!r} for {method}: {usage}")
        return IndexSpec(f"{method}:d{int(arg[1:])}", method, dim=int(arg[1:]), dtype=dtype)
    ((_, fraction),) = parse_project_spec(f"{method}:{arg}")
    return IndexSpec(method_label(method, fraction), method, fraction=fraction, dtype=dtype)


def parse_index(index: str | None) -> list[IndexSpec]:
    """``--index``'s value as IndexSpecs ([] when not given); GradLensError naming the
    option otherwise."""
    if not index:
        return []
    try:
        return parse_index_spec(index)
    except ValueError as exc:
        raise GradLensError(f"--index: {exc}") from None


def build_index_sets(
    specs: Sequence[IndexSpec],
    components: Sequence[Component],
    seed: int,
    net,
    shared: Sequence[str] = (),
) -> list[ProjectionSet]:
    """The projections the index entries need that are not among ``shared`` (the labels of
    ``--project``, whose vectors the engine computes anyway), with the run's seeds."""
    return [
        _projection_set(s.label, s.method, s.dims(components), components, seed, net)
        for s in specs
        if s.method != "exact" and s.label not in shared
    ]


def _term_shape(comp: Component, module: torch.nn.Module) -> tuple[int, int]:
    """The engine's orientation of a component's gradient: [out, in] (nn.Linear and
    nn.Embedding store their weight that way; GPT-2's Conv1D stores it transposed)."""
    if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
        return tuple(comp.shape)
    return (comp.shape[1], comp.shape[0])
