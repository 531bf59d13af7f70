"""Energy functions U_theta: R^d -> R (the model density is exp(-U) / Z)."""

from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor, nn

from algorithms.work import Work


class Energy(nn.Module):
    """Base class: ``forward(x)`` returns U(x) with shape (n,).

    Optional capabilities, used where present: ``log_z()`` (exact log normaliser, a tensor differentiable in
    theta), ``sample_exact(n)`` (exact samples of exp(-U)/Z) and ``mode_weights()`` (the model's own weight
    of each of its mixture components, in the order of the target's modes).

    ``summary``: what it is, in one phrase (``bench list``).

    ``stand_in``: empty for a paper's own network; otherwise one line saying what this network stands in for and
    how it differs (e.g. a paper that gives no layer list, or a paper's network at another size). A suite cell
    using it is never labelled "paper" (bench/suite.py); the line joins the cell's list of deviations."""

    summary: str = ""
    stand_in: str = ""
    #: the parameters a sized member was made with (``with_params``)
    params: dict = {}

    @classmethod
    def describe(cls) -> str:
        """``summary``, else the first paragraph of the docstring, whole."""
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        return cls.summary or " ".join(doc.split())

    @classmethod
    def with_params(cls, summary: str = "", stand_in: str | None = None, **params) -> type[Energy]:
        """``cls`` at given sizes: built as ``cls(dim, **params)`` (or ``cls(dim, shape, **params)`` for an image
        energy). The suite's small image energies and a suite file's ``name = { ref = "module:Class", ... }``
        are made this way. ``stand_in``: what the sized network stands in for (default: the class's own)."""
        image = getattr(cls, "image", False)

        def __init__(self, dim, shape=None):
            cls.__init__(self, dim, shape, **params) if image else cls.__init__(self, dim, **params)

        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return type(f"{cls.__name__}[{shown}]", (cls,), {
            "__init__": __init__, "__module__": cls.__module__, "params": dict(params),
            "summary": summary or f"{cls.describe()} ({shown})", "__doc__": cls.__doc__,
            "stand_in": cls.stand_in if stand_in is None else stand_in})

    def value(self, x: Tensor, work: Work) -> Tensor:
        work.energy_evals += x.shape[0]
        return self(x)

    def value_and_grad(self, x: Tensor, work: Work) -> tuple[Tensor, Tensor]:
        """U(x) (detached) and grad_x U(x), counting one energy and one gradient evaluation per point."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = self(x)
            (g,) = torch.autograd.grad(u.sum(), x)
        work.energy_evals += x.shape[0]
        work.grad_evals += x.shape[0]
        return u.detach(), g

    def grad(self, x: Tensor, work: Work) -> Tensor:
        return self.value_and_grad(x, work)[1]


def has_exact_log_z(energy) -> bool:
    """The energy knows its exact log normaliser (and is not tilted by a reference density)."""
    return hasattr(energy, "log_z") and not getattr(energy, "_tilted", False)


def samples_exactly(energy) -> bool:
    """The energy samples exp(-U)/Z exactly (and is not tilted by a reference density)."""
    return hasattr(energy, "sample_exact") and not getattr(energy, "_tilted", False)


class TargetEnergy(Energy):
    """U = -log p* of a target with an exact density: the EBM equal to the truth (known-answer tests of the
    evaluation and the audit). No parameters; float64."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, x):
        return -self.target.log_prob(x.double())


def states_mode_weights(energy) -> bool:
    """The energy states its own mode weights (a parametric mixture, not tilted by a reference density)."""
    return hasattr(energy, "mode_weights") and not getattr(energy, "_tilted", False)


class MLPEnergy(Energy):
    """A fully connected energy d -> hidden... -> 1: U = f / temperature, f the network's output.

    ``temperature`` T is the "custom temperature" of Nijkamp et al. 2020's code, which 000 App. C.1 follows for
    its ULA-EBM: that code's Langevin step x' = x - grad f + eps xi samples exp(-2 f / eps^2), so its model is
    U = f / T with T = eps^2 / 2, the ULA step h (algorithms/samplers.py); 1 (the default) makes U the output."""

    def __init__(self, dim: int, hidden: tuple[int, ...], activation: str = "leaky_relu", slope: float = 0.05,
                 temperature: float = 1.0):
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        self.temperature = float(temperature)
        acts = {
            "leaky_relu": lambda: nn.LeakyReLU(slope),
            "swish": nn.SiLU,
            "softplus": nn.Softplus,
            "elu": nn.ELU,
        }
        if activation not in acts:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(acts)}")
        layers: list[nn.Module] = []
        sizes = (dim, *hidden)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), acts[activation]()]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        f = self.net(x).squeeze(-1)
        return f if self.temperature == 1.0 else f / self.temperature

    def value_and_grad(self, x: Tensor, work: Work) -> tuple[Tensor, Tensor]:
        """U(x) and grad_x U(x) by the chain rule written out (one forward, one backward of matrix products),
        without building an autograd graph: the same numbers as ``Energy.value_and_grad`` up to rounding, and
        the same work (one energy and one gradient evaluation per point), at about half the fixed cost per
        call on small batches. Falls back to autograd whenever the plain MLP is not what ``energy(x)``
        computes (forward hooks, e.g. a tilt; a subclass's own forward; an activation without a backward
        formula here)."""
        return self._chain_rule(x, work, value=True)

    def grad(self, x: Tensor, work: Work) -> Tensor:
        """grad_x U(x) as ``value_and_grad`` gives it (the same numbers), without the output layer's value, which
        a Langevin step does not use; counted as ``value_and_grad`` counts it. A subclass's own ``value_and_grad``
        is used as it is."""
        if type(self).value_and_grad is not MLPEnergy.value_and_grad:
            return self.value_and_grad(x, work)[1]
        return self._chain_rule(x, work, value=False)[1]

    def _chain_rule(self, x: Tensor, work: Work, value: bool) -> tuple[Tensor | None, Tensor]:
        layers = self._plain_layers()
        if layers is None:
            return super().value_and_grad(x, work)
        with torch.no_grad():
            x = x.detach()
            pre, a = [], x
            for lin, back in layers[:-1]:
                h = torch.addmm(lin.bias, a, lin.weight.t())
                pre.append((h, back))
                a = back[0](h)
            last = layers[-1][0]
            u = torch.addmm(last.bias, a, last.weight.t()).squeeze(-1) if value else None
            g = last.weight.expand(x.shape[0], -1)
            for (lin, _), (h, back) in zip(reversed(layers[:-1]), reversed(pre), strict=True):
                g = back[1](g, h).mm(lin.weight)
            if self.temperature != 1.0:
                u, g = None if u is None else u / self.temperature, g / self.temperature
        work.energy_evals += x.shape[0]
        work.grad_evals += x.shape[0]
        return u, g

    def _plain_layers(self, tilted_ok: bool = False, raw: bool = False):
        """[(Linear, (act, act_backward)), ..., (Linear, None)] if ``self(x)`` is the bare MLP, else None.
        ``tilted_ok``: also when ``self(x)`` is the bare MLP plus a tilt (algorithms/tilt.py) whose reference
        states its gradient (the caller adds the reference); ``raw``: also with any tilt, the caller using the bare
        MLP alone (``tilt.Raw``)."""
        if type(self).forward is not MLPEnergy.forward or nn.modules.module._global_forward_hooks \
                or nn.modules.module._global_forward_pre_hooks:
            return None
        mods = list(self.net)
        tilt_only = ((tilted_ok or raw) and getattr(self, "_tilted", False) and len(self._forward_hooks) == 1
                     and (raw or callable(getattr(getattr(self, "_reference", None), "grad", None))))
        own = () if tilt_only else (self,)
        if len(mods) % 2 == 0 or self._forward_pre_hooks \
                or any(m._forward_hooks or m._forward_pre_hooks for m in (*own, self.net, *mods)):
            return None
        out = []
        for i in range(0, len(mods) - 1, 2):
            lin, act = mods[i], mods[i + 1]
            back = _ACT_BACKWARD.get(type(act))
            if type(lin) is not nn.Linear or lin.bias is None or back is None:
                return None
            out.append((lin, back(act)))
        if type(mods[-1]) is not nn.Linear or mods[-1].bias is None or mods[-1].out_features != 1:
            return None
        return out + [(mods[-1], None)]


#: activation type -> (module -> (forward, backward(grad_out, pre_activation)))
_ACT_BACKWARD = {
    nn.LeakyReLU: lambda m: (m, lambda g, h: torch.ops.aten.leaky_relu_backward(g, h, m.negative_slope, False)),
    nn.SiLU: lambda m: (m, torch.ops.aten.silu_backward),
}


class ToyMLP(MLPEnergy):
    """The ~10k-parameter toy EBM of Nijkamp et al. 2020 ("anatomy") used by 000 App. C.2-C.4:
    MLP 2 -> 32 -> 64 -> 64 -> 64 -> 1 with LeakyReLU(0.05), 10,593 parameters. Built from Linear layers
    (the anatomy code's 1x1 convolutions compute the same map, ~3.5x slower).

    In d dimensions (000 App. C.5: "the same as described in (Nijkamp et al., 2020a)") only the input layer
    grows: d -> 32 -> 64 -> 64 -> 64 -> 1, 10,529 + 32 d parameters (11,041 at d = 16, 12,577 at d = 64);
    000 gives no other sizing for d."""

    summary = "the ~10k-parameter toy MLP of Nijkamp et al. 2020 that 000 uses (d, 32, 64, 64, 64, 1; LeakyReLU)"

    def __init__(self, dim: int = 2, temperature: float = 1.0):
        super().__init__(dim, (32, 64, 64, 64), "leaky_relu", 0.05, temperature)


class QuadraticEnergy(Energy):
    """U(x) = |x - mu|^2 / (2 s^2) with learnable mu and log s: the Gaussian N(mu, s^2 I).

    Its log Z = d log(s sqrt(2 pi)) is exact, so it serves tests that need an analytic answer."""

    summary = "the Gaussian |x - mu|^2 / (2 s^2) with learnable mean and scale, exact log Z and samples"

    def __init__(self, dim: int, mean=None, log_std: float = 0.0):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.log_std = nn.Parameter(torch.tensor(float(log_std)))

    def forward(self, x):
        return ((x - self.mean) ** 2).sum(-1) / (2 * torch.exp(2 * self.log_std))

    def log_z(self) -> Tensor:
        return self.mean.shape[0] * (self.log_std + 0.5 * math.log(2 * math.pi))

    def sample_exact(self, n: int) -> Tensor:
        with torch.no_grad():
            return self.mean + self.log_std.exp() * torch.randn(n, self.mean.shape[0], device=self.mean.device,
                                                                dtype=self.mean.dtype)


class GMMStudent(Energy):
    """The parametric student of 003 eq. (15): U(x) = -log(exp(-|x-a|^2/2) + exp(-|x-b|^2/2 - z)),
    theta = (a, b, z), with the exact log Z = (d/2) log 2 pi + log(1 + e^-z) (003 §4.1).

    Initialisation (003 App. B.1): a, b ~ 0.01 N(0, I) with first coordinates -0.1 and +0.1, z = 0, so
    rho_theta0 is close to N(0, I). The model samples itself exactly (``sample_exact``), which is how 003
    starts its Jarzynski walkers ("sampled from rho_theta0").

    Its mode weights are its parameters (``mode_weights``): sigma(z) = 1 / (1 + e^-z) for the component at a
    (003's p_k, Fig. 1 and 6 left panels) and 1 - sigma(z) for b, in the teacher's order (a* first). This is
    not the share of its samples nearest each teacher mode: before a and b separate both components sit
    near 0 and that share is ~0.023 for the -10 mode while p_k = 0.5.
    """

    summary = "003's parametric student (eq. 15): two unit-covariance components, exact log Z, exact samples"

    def __init__(self, dim: int, init_scale: float = 0.01, first: float = 0.1):
        super().__init__()
        a = init_scale * torch.randn(dim)
        b = init_scale * torch.randn(dim)
        a[0], b[0] = -first, first
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)
        self.z = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return _StudentEnergy.apply(x, self.a, self.b, self.z)

    def forward_autograd(self, x):
        """U(x) as the plain autograd graph of eq. (15): the reference the closed forms are tested against."""
        return _student_energy_graph(x, self.a, self.b, self.z)

    def value_and_grad(self, x: Tensor, work: Work) -> tuple[Tensor, Tensor]:
        """U(x) and grad_x U(x) = x - r a - (1 - r) b in closed form (r: the responsibility of the component
        at a), without autograd; counted as one energy and one gradient evaluation per point. A tilted
        student (forward hooks: ``algorithms.tilt``) goes through autograd, which sees the tilt."""
        if self._forward_hooks or self._forward_pre_hooks:
            return super().value_and_grad(x, work)
        with torch.no_grad():
            u, resp = _student_terms(x.detach(), self.a, self.b, self.z)
            g = _student_x_grad(x.detach(), resp, self.a, self.b)
        work.energy_evals += x.shape[0]
        work.grad_evals += x.shape[0]
        return u, g

    def log_z(self) -> Tensor:
        d = self.a.shape[0]
        return 0.5 * d * math.log(2 * math.pi) + torch.nn.functional.softplus(-self.z)

    @property
    def p(self) -> float:
        """Weight of the mode at a: 1 / (1 + e^-z)."""
        return float(torch.sigmoid(self.z.detach()))

    def mode_weights(self) -> Tensor:
        """(sigma(z), 1 - sigma(z)): the weights of the components at a and b (003 eq. 15; p_k of Fig. 1)."""
        p = torch.sigmoid(self.z.detach())
        return torch.stack([p, 1 - p])

    def unit_components(self) -> tuple[Tensor, Tensor]:
        """The model as a mixture of N(m_k, I): means (a; b) and weights (sigma(z), 1 - sigma(z)), detached."""
        return torch.stack([self.a, self.b]).detach(), self.mode_weights()

    def sample_exact(self, n: int) -> Tensor:
        with torch.no_grad():
            at_a = torch.rand(n, device=self.a.device, dtype=self.a.dtype) < torch.sigmoid(self.z)
            mean = torch.where(at_a[:, None], self.a, self.b)
            return mean + torch.randn_like(mean)


# ---- the 003 student's energy in closed form ---------------------------------------------------------------
# With M = (a; b) and c_n = x_n . M^T - (|a|^2 / 2, |b|^2 / 2 + z), eq. (15) is U(x) = |x|^2 / 2 - logaddexp(c),
# the responsibility of the component at a is r = sigmoid(c_0 - c_1), and
#     dU/dx = x - r a - (1 - r) b,   dU/da = -r (x - a),   dU/db = -(1 - r) (x - b),   dU/dz = 1 - r.
# Two passes over the (n, d) points (|x|^2 and one (n, d) x (d, 2) product) instead of autograd through about
# ten elementwise (n, d) operations; tested against autograd in tests/test_gmm.py.


def _student_energy_graph(x, a, b, z):
    la = -0.5 * ((x - a) ** 2).sum(-1)
    lb = -0.5 * ((x - b) ** 2).sum(-1) - z
    return -torch.logaddexp(la, lb)


def _student_terms(x, a, b, z):
    """U(x) and the responsibility r of the component at a, shape (n,) each."""
    m = torch.stack([a, b]).to(x.dtype)
    c = x @ m.T
    c[:, 0] -= 0.5 * a.dot(a)
    c[:, 1] -= 0.5 * b.dot(b) + z
    u = 0.5 * torch.linalg.vecdot(x, x) - torch.logaddexp(c[:, 0], c[:, 1])
    return u, torch.sigmoid(c[:, 0] - c[:, 1])


def _student_x_grad(x, resp, a, b):
    """x - r a - (1 - r) b in one (n, 2) x (2, d) product added to x."""
    r2 = torch.stack([resp, 1 - resp], 1)
    return torch.addmm(x, r2, torch.stack([a, b]).to(x.dtype), alpha=-1)


class _StudentEnergy(torch.autograd.Function):
    """U of eq. (15) with its closed-form first derivatives in x, a, b and z. Derivatives of higher order
    (``create_graph=True``, e.g. a Hessian trace) go through the autograd graph of the same formula."""

    @staticmethod
    def forward(ctx, x, a, b, z):
        u, resp = _student_terms(x, a, b, z)
        ctx.save_for_backward(x, a, b, z, resp)
        return u

    @staticmethod
    def backward(ctx, gu):
        x, a, b, z, resp = ctx.saved_tensors
        need_x, need_a, need_b, need_z = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: differentiate the plain graph, which autograd can go through
            inputs = (x, a, b, z)  # the saved inputs, attached to the caller's graph
            u = _student_energy_graph(*inputs)
            wanted = [t for t, n in zip(inputs, ctx.needs_input_grad, strict=True) if n]
            got = iter(torch.autograd.grad(u, wanted, gu, create_graph=True))
            return tuple(next(got) if n else None for n in ctx.needs_input_grad)
        gx = ga = gb = gz = None
        if need_x:
            gx = gu[:, None] * _student_x_grad(x, resp, a, b)
        if need_a or need_b or need_z:
            w = torch.stack([gu * resp, gu * (1 - resp)])  # (2, n)
            if need_a or need_b:
                s = w @ x  # (2, d): sum_n w_n x_n
                ws = w.sum(1)
                ga = ws[0] * a - s[0] if need_a else None
                gb = ws[1] * b - s[1] if need_b else None
            if need_z:
                gz = w[1].sum().to(z.dtype).reshape(z.shape)
        return gx, ga, gb, gz


class SwishMLP(MLPEnergy):
    """002 A.1's 2-D energy: "a 5-layer fully connected network with 256 hidden units and swish activation".
    We read "5-layer" as five Linear layers, d -> 256 -> 256 -> 256 -> 256 -> 1 (four hidden layers of 256
    units, swish = SiLU after each), 198,401 parameters in 2-D. Swish is smooth, so the Hessian trace of the
    ODE flow's density (002 eq. 6) exists."""

    summary = "002 A.1's 2-D energy: an MLP with four hidden layers of 256 units and swish"

    def __init__(self, dim: int = 2, hidden: tuple[int, ...] = (256,) * 4):
        super().__init__(dim, hidden, "swish")


class SmallSwishMLP(SwishMLP):
    """A cheaper stand-in for SwishMLP (quick fidelities): d -> 64 -> 64 -> 64 -> 1, swish."""

    summary = "a cheaper stand-in for 002's swish MLP (three hidden layers of 64) for quick fidelities"

    def __init__(self, dim: int = 2):
        super().__init__(dim, (64,) * 3)


#: the vector energies (the image ones: conv_energies.BUILT_IN); bench.registry registers them
BUILT_IN = {
    "toy_mlp": ToyMLP,
    "swish_mlp": SwishMLP,
    "swish_mlp_small": SmallSwishMLP,
    "quadratic": QuadraticEnergy,
    "gmm_student": GMMStudent,
}

#: name -> class of every registered energy, built-in or plug-in: filled by bench.registry.register only
ENERGIES: dict[str, type[Energy]] = {}


def make_energy(name: str, dim: int, shape: tuple[int, ...] | None = None, temperature: float = 1.0) -> Energy:
    """The energy ``name`` on dim-dimensional inputs; image energies (``image = True``, conv_energies.py)
    also get the target's image ``shape`` (C, H, W); ``temperature`` != 1 only for energies that take one
    (``MLPEnergy``: U = f / temperature)."""
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; valid: {', '.join(ENERGIES)}")
    cls = ENERGIES[name]
    kw = {}
    if temperature != 1.0:
        if "temperature" not in inspect.signature(cls).parameters:
            raise ValueError(f"energy {name!r} has no temperature (only 1 is valid), got {temperature}")
        kw["temperature"] = temperature
    return cls(dim, shape, **kw) if getattr(cls, "image", False) else cls(dim, **kw)
