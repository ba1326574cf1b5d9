"""Options of ``bayesattn tva fit``: ``--k``, ``--t0``, ``--prior``, ``--by``, and the model.

Parameter names on the command line and in every output (the field's names, StanTVA/RStanTVA;
Dyrholm et al. 2011), with the :class:`~bayesattn.models.neuro.tva.TVA` site each one is:

===========  ================  ==========================================================
output       TVA site          meaning (units)
===========  ================  ==========================================================
``C``        ``C``             processing capacity (items/s)
``alpha``    ``alpha``         distractor weight relative to a target (partial report)
``w``        ``weights``       spatial attentional weights, one per location or region
``mu0``      ``t0``            mean perception threshold (ms): the mean of the Gaussian
                               threshold, the fixed threshold, or the mean of the
                               exponential threshold
``sigma0``   ``t0_sd``         sd of the Gaussian threshold (ms)
``mK``       ``mK``            mean of the probit VSTM capacity
``sK``       ``sK``            sd of the probit VSTM capacity
``pK``       ``K_probs``       free VSTM capacity: probabilities of ``K = 0..N``
===========  ================  ==========================================================

:data:`OUTPUT_NAMES` is that table; it is applied once, when a fit's InferenceData is made
(:func:`rename_parameters`).

``--prior NAME=Family(args)`` names a distribution of ``pyro.distributions`` with numeric
arguments only (numbers, or lists of numbers in brackets; keywords allowed), e.g.
``C=LogNormal(4.5,0.6)``, ``sigma0=HalfNormal(10)``, ``w=Dirichlet([2,2,2,2,2,2])``
(``w=Dirichlet(2)`` repeats 2 for every weight). It is parsed with :mod:`ast`, never
evaluated.
"""

from __future__ import annotations

import ast
import math

from ..errors import UsageError

__all__ = ["OUTPUT_NAMES", "PRIOR_NAMES", "CONDITION_PARAMS", "parse_prior", "make_prior",
           "parse_k", "parse_t0", "parse_by", "parse_condition_params", "build_model",
           "rename_parameters", "check_priors"]

#: TVA site -> output name (module docstring)
OUTPUT_NAMES = {"C": "C", "alpha": "alpha", "weights": "w", "t0": "mu0", "t0_sd": "sigma0",
                "mK": "mK", "sK": "sK", "K_probs": "pK", "K_mean": "K_mean"}
#: names accepted by ``--prior`` -> TVA site
PRIOR_NAMES = {v: k for k, v in OUTPUT_NAMES.items() if k != "K_mean"}
#: ``--condition-params`` names -> TVA ``by_condition`` names
CONDITION_PARAMS = {"C": "C", "alpha": "alpha", "w": "weights", "K": "K", "t0": "t0"}
#: default prior of ``sigma0`` with ``--t0 gaussian`` (ms)
SIGMA0_PRIOR = "HalfNormal(10)"
_POSITIVE = ("C", "alpha", "sigma0", "sK")


def _number(node, text):
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _number(node.operand, text)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List | ast.Tuple):
        values = [_number(e, text) for e in node.elts]
        if not values or any(isinstance(v, list) for v in values):
            raise UsageError(f"--prior {text!r}: a list argument must hold numbers")
        return values
    raise UsageError(f"--prior {text!r}: arguments must be numbers or [lists of numbers]")


def parse_prior(text: str) -> tuple[str, str, list, dict]:
    """Parse ``NAME=Family(args)`` without evaluating it.

    Returns:
        ``(name, family, args, kwargs)``: numbers are floats, lists are lists of floats.

    Raises:
        UsageError: no ``=``; an unknown name (not in :data:`PRIOR_NAMES`); not a call of a
            plain name; a non-numeric argument; non-finite numbers; an unknown family.
    """
    name, sep, rhs = text.partition("=")
    name, rhs = name.strip(), rhs.strip()
    if not sep or not rhs:
        raise UsageError(f"--prior {text!r}: expected NAME=Family(args), e.g. "
                         "C=LogNormal(4.5,0.6)")
    if name not in PRIOR_NAMES:
        raise UsageError(f"--prior {text!r}: unknown parameter {name!r}; expected one of "
                         f"{', '.join(PRIOR_NAMES)}")
    try:
        node = ast.parse(rhs, mode="eval").body
    except SyntaxError:
        raise UsageError(f"--prior {text!r}: expected Family(args), e.g. LogNormal(4.5,0.6)"
                         ) from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise UsageError(f"--prior {text!r}: expected Family(args), e.g. LogNormal(4.5,0.6)")
    args = [_number(a, text) for a in node.args]
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise UsageError(f"--prior {text!r}: ** arguments are not allowed")
        kwargs[kw.arg] = _number(kw.value, text)
    flat = [v for a in [*args, *kwargs.values()] for v in (a if isinstance(a, list) else [a])]
    if not all(math.isfinite(v) for v in flat):
        raise UsageError(f"--prior {text!r}: arguments must be finite numbers")
    _family(node.func.id, text)
    return name, node.func.id, args, kwargs


def _family(family: str, text: str):
    import pyro.distributions as pdist
    import torch

    cls = None if family.startswith("_") else getattr(pdist, family, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.distributions.Distribution)):
        raise UsageError(f"--prior {text!r}: {family!r} is not a distribution of "
                         "pyro.distributions (e.g. Normal, LogNormal, Gamma, HalfNormal, "
                         "Dirichlet)")
    return cls


def make_prior(text: str, *, size: int | None = None):
    """Build the distribution of ``--prior text``.

    Args:
        text: ``NAME=Family(args)``.
        size: for ``Dirichlet`` with one number: the length of its concentration vector.

    Returns:
        ``(name, distribution)``, parameters as float64 tensors, ``validate_args=True``.

    Raises:
        UsageError: as :func:`parse_prior`; the family rejects the arguments.
    """
    import torch

    name, family, args, kwargs = parse_prior(text)
    cls = _family(family, text)
    if family == "Dirichlet" and size is not None and len(args) == 1 and not kwargs \
            and not isinstance(args[0], list):
        args = [[args[0]] * size]

    def tensor(v):
        return torch.tensor(v, dtype=torch.float64)

    try:
        d = cls(*map(tensor, args), **{k: tensor(v) for k, v in kwargs.items()},
                validate_args=True)
    except (TypeError, ValueError, RuntimeError) as err:
        msg = " ".join(str(err).split())
        raise UsageError(f"--prior {text!r}: {family} rejects these arguments ({msg[:200]})"
                         ) from None
    return name, d


def check_priors(texts, *, num_weights: int, num_locations: int, k: tuple, t0: tuple,
                 task: str) -> dict[str, str]:
    """Check every ``--prior`` against the model it will enter; ``{name: text}``.

    Raises:
        UsageError: a name given twice; a prior for a parameter the options fix (``mu0`` with
            ``--t0 fixed``, ``sigma0`` without ``--t0 gaussian``, ``mK``/``sK`` without
            ``--k probit``, ``pK`` without ``--k free``, ``alpha`` in whole report); a
            discrete family; the wrong shape (scalars; ``w`` over the weights, ``pK`` over
            ``K = 0..N``); a support that allows values the parameter cannot take (negative
            ``C``, ``alpha``, ``sigma0``, ``sK``, or ``mu0`` of an exponential threshold; ``w``
            and ``pK`` off the simplex).
    """
    from torch.distributions import constraints

    out: dict[str, str] = {}
    for text in texts:
        name = parse_prior(text)[0]
        if name in out:
            raise UsageError(f"--prior {name} given twice ({out[name]!r} and {text!r})")
        fixed = {"mu0": t0[0] == "fixed" and "--t0 fixed=VALUE fixes it",
                 "sigma0": t0[0] != "gaussian" and "only --t0 gaussian has it",
                 "mK": k[0] != "probit" and "only --k probit has it",
                 "sK": k[0] != "probit" and "only --k probit has it",
                 "pK": k[0] != "free" and "only --k free has it",
                 "alpha": task == "whole" and "whole report has no distractors"}.get(name)
        if fixed:
            raise UsageError(f"--prior {text!r}: {name} is not a free parameter here ({fixed})")
        size = {"w": num_weights, "pK": num_locations + 1}.get(name)
        _, d = make_prior(text, size=size)
        if d.support.is_discrete:
            raise UsageError(f"--prior {text!r}: a discrete distribution; {name} is continuous")
        if name in ("w", "pK"):
            shapes = [(num_weights,)] if name == "w" else [(num_locations + 1,),
                                                          (num_locations,)]
            if d.batch_shape != () or d.event_shape not in shapes or \
                    d.support is not constraints.simplex:
                what = (f"{num_weights} weights" if name == "w"
                        else f"K = 0..{num_locations} ({num_locations + 1} values)")
                raise UsageError(f"--prior {text!r}: {name} needs a distribution on the simplex "
                                 f"over {what}, e.g. Dirichlet(2); got event shape "
                                 f"{tuple(d.event_shape)}")
        else:
            if d.batch_shape != () or d.event_shape != ():
                raise UsageError(f"--prior {text!r}: {name} is one number; the distribution "
                                 f"has shape {tuple(d.batch_shape + d.event_shape)}")
            positive = name in _POSITIVE or (name == "mu0" and t0[0] == "exponential")
            low = getattr(d.support, "lower_bound", None)
            if positive and (low is None or float(low) < 0):
                raise UsageError(f"--prior {text!r}: {name} must be positive but {family_of(text)}"
                                 " puts mass on negative values (use e.g. LogNormal, Gamma, "
                                 "HalfNormal)")
        out[name] = text
    return out


def family_of(text: str) -> str:
    """The family named in ``--prior text``."""
    return parse_prior(text)[1]


def parse_k(text: str) -> tuple:
    """``--k``: ``("probit",)``, ``("free",)`` or ``("fixed", int)``.

    Raises:
        UsageError: anything else, or a fixed value that is not a positive integer.
    """
    text = text.strip()
    if text in ("probit", "free"):
        return (text,)
    kind, sep, value = text.partition("=")
    if kind.strip() == "fixed" and sep:
        try:
            k = int(value)
        except ValueError:
            k = None
        if k is None or k < 1:
            raise UsageError(f"--k {text!r}: fixed=VALUE needs a positive integer VALUE "
                             "(items in VSTM)")
        return ("fixed", k)
    raise UsageError(f"--k {text!r}: expected probit, free or fixed=VALUE")


def parse_t0(text: str) -> tuple:
    """``--t0``: ``("gaussian",)``, ``("exponential",)`` or ``("fixed", float ms)``.

    Raises:
        UsageError: anything else, or a non-finite fixed value.
    """
    text = text.strip()
    if text in ("gaussian", "exponential"):
        return (text,)
    kind, sep, value = text.partition("=")
    if kind.strip() == "fixed" and sep:
        try:
            t0 = float(value)
        except ValueError:
            t0 = math.nan
        if not math.isfinite(t0):
            raise UsageError(f"--t0 {text!r}: fixed=VALUE needs a number VALUE (ms)")
        return ("fixed", t0)
    raise UsageError(f"--t0 {text!r}: expected gaussian, exponential or fixed=VALUE (ms)")


def parse_by(text: str) -> tuple[str, ...]:
    """``--by``: ``("subject",)``, ``("condition",)`` or ``("subject", "condition")``.

    Raises:
        UsageError: another column, or one given twice.
    """
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names or any(c not in ("subject", "condition") for c in names) \
            or len(set(names)) != len(names):
        raise UsageError(f"--by {text!r}: expected subject, condition or subject,condition")
    return tuple(c for c in ("subject", "condition") if c in names)


def parse_condition_params(text: str | None, *, task: str) -> tuple[str, ...]:
    """``--condition-params C,alpha,w,K,t0``: the TVA ``by_condition`` names.

    Raises:
        UsageError: an unknown name; ``alpha`` in whole report.
    """
    if not text:
        return ()
    out = []
    for raw in text.split(","):
        name = raw.strip()
        if name not in CONDITION_PARAMS:
            raise UsageError(f"--condition-params {text!r}: unknown parameter {name!r}; "
                             f"expected some of {', '.join(CONDITION_PARAMS)}")
        if name == "alpha" and task == "whole":
            raise UsageError("--condition-params alpha: whole report has no distractors")
        if CONDITION_PARAMS[name] not in out:
            out.append(CONDITION_PARAMS[name])
    return tuple(out)


def build_model(spec: dict):
    """The TVA model of a fit from its plain-data ``spec`` (built in the worker process).

    ``spec`` keys: ``num_locations``, ``task``, ``k``, ``t0`` (from :func:`parse_k`,
    :func:`parse_t0`), ``regions`` (str or None), ``priors`` ({name: text}), ``empty_slots``
    (whole report with empty locations: fitted as partial report with targets = shown and no
    distractors, ``alpha`` unused), ``conditions`` (int), ``by_condition`` (tuple),
    ``hierarchical`` (bool), ``num_subjects`` (int), ``deviation`` (hierarchical fits:
    ``"condition"`` or ``"subject"``; absent means ``"condition"``).

    Raises:
        UsageError: a model option this version of bayesattn lacks (``HierarchicalTVA``, or
            per-condition parameters); the model rejects the options (e.g. ``--regions``).
    """
    import torch

    from ..models.neuro.tva import TVA

    n = spec["num_locations"]
    priors = {}
    for name, text in spec["priors"].items():
        size = None
        if name == "w":
            size = _num_regions(spec["regions"], n)
        elif name == "pK":
            size = n + 1
        priors[name] = make_prior(text, size=size)[1]
    kw: dict = {"paradigm": "partial" if spec["task"] == "partial" or spec["empty_slots"]
                else "whole", "regions": spec["regions"]}
    kind = spec["k"][0]
    if kind == "probit":
        kw.update(K="probit", mK=priors.get("mK"), sK=priors.get("sK"))
    elif kind == "free":
        kw["K"] = priors.get("pK", "free")
    else:
        kw["K"] = int(spec["k"][1])
    t0 = spec["t0"]
    if t0[0] == "fixed":
        kw.update(t0=float(t0[1]), t0_sd=0.0)
    elif t0[0] == "gaussian":
        kw.update(t0=priors.get("mu0"),
                  t0_sd=priors.get("sigma0") or make_prior("sigma0=" + SIGMA0_PRIOR)[1])
    else:
        kw.update(t0=priors.get("mu0"), t0_dist="exponential")
    if "C" in priors:
        kw["C"] = priors["C"]
    if "w" in priors:
        kw["weights"] = priors["w"]
    if spec["task"] == "partial":
        kw["alpha"] = priors.get("alpha")
    elif spec["empty_slots"]:
        kw["alpha"] = torch.tensor(1.0, dtype=torch.float64)  # no distractors: unused
    if spec["conditions"] > 1 or spec["by_condition"]:
        kw.update(conditions=spec["conditions"], by_condition=tuple(spec["by_condition"]))
    cls = TVA
    args: tuple = (n,)
    if spec["hierarchical"]:
        try:
            from ..models.neuro.tva import HierarchicalTVA
        except ImportError:
            raise UsageError("--hierarchical needs HierarchicalTVA, which this version of "
                             "bayesattn lacks; fit per subject (without --hierarchical)"
                             ) from None
        cls, args = HierarchicalTVA, (spec["num_subjects"], n)
        kw["deviation"] = spec.get("deviation", "condition")
    try:
        return cls(*args, **kw)
    except TypeError as err:
        if "conditions" in kw and ("conditions" in str(err) or "by_condition" in str(err)):
            raise UsageError("--condition-params (or several conditions in one fit) needs a "
                             f"{cls.__name__} with per-condition parameters, which this version "
                             "of bayesattn lacks; use --by subject,condition") from None
        raise UsageError(f"the TVA model rejects these options ({err})") from None
    except ValueError as err:
        raise UsageError(f"the TVA model rejects these options ({err})") from None


def _num_regions(regions: str | None, n: int) -> int:
    if regions is None:
        return n
    return len(regions.split(","))


def rename_parameters(idata):
    """Rename the TVA sites in ``idata``'s ``posterior`` and ``prior`` to the output names
    (:data:`OUTPUT_NAMES`), their dims ``SITE_dim_i`` to ``NAME_dim_i``; returns a new object.
    """
    names, dims = {}, {}
    for group in ("posterior", "prior"):
        if group not in idata.groups():
            continue
        ds = idata[group]
        for site, name in OUTPUT_NAMES.items():
            if site in ds.data_vars and site != name:
                names[site] = name
                for d in ds[site].dims:
                    if d.startswith(site + "_dim"):
                        dims[d] = name + d[len(site):]
    groups = [g for g in ("posterior", "prior") if g in idata.groups()]
    if names or dims:
        idata = idata.rename({**names, **dims}, groups=groups)
    return idata
