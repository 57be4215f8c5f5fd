"""jaxft.optim against torch.optim.SGD + lr_scheduler on the same parameters and loss, and against
independent torch implementations of SGDW and L2-SP; masks, multipliers, runtime hyperparameters."""
import torch  # noqa: I001 - before anything that may import tensorflow

import importlib.util
import pathlib
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxft import optim

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"
_spec = importlib.util.spec_from_file_location("default_config", _DEFAULT_CONFIG)
default_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default_config)

SHAPES = {"conv": {"kernel": (3, 3, 2, 4), "bias": (4,)}, "fc": {"kernel": (6, 3), "bias": (3,)}, "scale": ()}
STEPS = 120
MILESTONES = (40, 90)  # two decays inside the run
BASE_LR = 0.05
COUPLING = 0.05  # couples every leaf's gradient to every other leaf's values


def _problem(seed=0):
    """Initial params, targets and curvatures (numpy float64, the structure of SHAPES)."""
    rng = np.random.default_rng(seed)
    is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
    make = lambda scale, offset: jax.tree.map(  # noqa: E731
        lambda shape: offset + scale * np.asarray(rng.standard_normal(shape)), SHAPES, is_leaf=is_shape)
    curvatures = jax.tree.map(np.abs, make(1.0, 1.5), is_leaf=lambda x: isinstance(x, np.ndarray))
    return make(1.0, 0.0), make(1.0, 2.0), curvatures


def _loss(leaves, targets, curvatures, sin, coupling):
    """A nonlinear loss written once for both frameworks (jnp arrays and torch tensors)."""
    total, value, count = 0.0, 0.0, sum(int(np.prod(np.shape(t))) for t in targets)
    for w, t, a in zip(leaves, targets, curvatures):
        value = value + 0.5 * (a * (w - t) ** 2).sum() + 0.1 * sin(w).sum()
        total = total + w.sum()
    return value + coupling * total**2 / count


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def _jax_run(tx, problem, dtype, *, steps=STEPS, coupling=COUPLING, state=None, params=None):
    init, targets, curvatures = problem
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), init) if params is None else params
    targets, curvatures = [[jnp.asarray(x, dtype) for x in _leaves(t)] for t in (targets, curvatures)]
    loss = lambda p: _loss(_leaves(p), targets, curvatures, jnp.sin, coupling)  # noqa: E731
    state = tx.init(params) if state is None else state

    def body(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    run = jax.jit(lambda carry: jax.lax.scan(body, carry, None, length=steps)[0])
    return run((params, state))


def _torch_run(problem, dtype, *, lr=BASE_LR, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
               scheduler="multistep", multipliers=None, coupling=COUPLING, steps=STEPS, penalty=None,
               sgdw=False):
    """torch.optim.SGD with one param group per lr multiplier and a per-update scheduler; sgdw
    replaces its step by an independent SGDW; penalty(tensors) adds a loss term (L2-SP)."""
    init, targets, curvatures = problem
    paths = optim._leaf_paths(init)
    tensors = [torch.tensor(x, dtype=dtype, requires_grad=True) for x in _leaves(init)]
    targets, curvatures = [[torch.tensor(x, dtype=dtype) for x in _leaves(t)] for t in (targets, curvatures)]
    multipliers = [dict(multipliers or {}).get(path.split("/")[0], 1.0) for path in paths]
    groups = [{"params": [t for t, mult in zip(tensors, multipliers) if mult == value], "lr": lr * value}
              for value in sorted(set(multipliers))]
    sgd = torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                          weight_decay=0.0 if sgdw else weight_decay)
    if scheduler == "multistep":
        schedule = torch.optim.lr_scheduler.MultiStepLR(sgd, milestones=list(MILESTONES), gamma=0.1)
    else:
        schedule = torch.optim.lr_scheduler.StepLR(sgd, step_size=30, gamma=0.5)
    buffers = [None] * len(tensors)
    for _ in range(steps):
        sgd.zero_grad()
        loss = _loss(tensors, targets, curvatures, torch.sin, coupling)
        (loss + (penalty(tensors) if penalty else 0.0)).backward()
        if sgdw:  # w <- w - lr_t * buf - lr_t * wd * w, buf from the plain gradient
            with torch.no_grad():
                rate = sgd.param_groups[0]["lr"]
                for i, w in enumerate(tensors):
                    buffers[i] = w.grad.clone() if buffers[i] is None else momentum * buffers[i] + w.grad
                    w.sub_(rate * buffers[i] + rate * weight_decay * w)
        else:
            sgd.step()
        with warnings.catch_warnings():  # the SGDW path never calls sgd.step(), which torch flags
            warnings.simplefilter("ignore", UserWarning)
            schedule.step()
    return [t.detach().numpy() for t in tensors]


def _relative_error(ours, reference):
    """Largest over leaves of max |ours - reference| / max |reference|."""
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))
               for a, b in zip(_leaves(ours), reference))


PRECISIONS = [pytest.param(True, 1e-10, id="float64"), pytest.param(False, 1e-5, id="float32")]
TORCH_CASES = [  # (momentum, nesterov, dampening, weight_decay, scheduler, multipliers, runtime_momentum)
    (0.0, False, 0.0, 0.0, "multistep", None, False),
    (0.0, False, 0.0, 1e-4, "multistep", None, True),
    (0.0, False, 0.5, 1e-4, "multistep", None, True),  # torch ignores dampening at m = 0
    (0.5, False, 0.0, 1e-4, "multistep", None, True),
    (0.9, False, 0.0, 0.0, "multistep", None, True),
    (0.9, False, 0.0, 1e-4, "multistep", None, False),
    (0.99, False, 0.0, 1e-4, "multistep", None, True),
    (0.5, True, 0.0, 0.0, "multistep", None, True),
    (0.9, True, 0.0, 1e-4, "multistep", None, True),
    (0.99, True, 0.0, 1e-4, "multistep", None, True),
    (0.9, False, 0.5, 1e-4, "multistep", None, True),
    (0.9, False, 0.0, 1e-4, "step", None, True),
    (0.9, False, 0.0, 1e-4, "multistep", {"fc": 10.0, "scale": 0.0}, True),
]


@pytest.mark.parametrize("x64,tolerance", PRECISIONS)
def test_matches_torch_sgd(x64, tolerance):
    problem = _problem()
    dtype, torch_dtype = (jnp.float64, torch.float64) if x64 else (jnp.float32, torch.float32)
    worst = 0.0
    with jax.enable_x64(x64):
        for momentum, nesterov, dampening, weight_decay, scheduler, multipliers, runtime in TORCH_CASES:
            schedule = (optim.multi_step_schedule(MILESTONES, 0.1) if scheduler == "multistep"
                        else optim.step_decay_schedule(30, 0.5))
            settings = dict(momentum=momentum, nesterov=nesterov, dampening=dampening,
                            weight_decay=weight_decay)
            tx = optim.sgd(BASE_LR, **settings, lr_schedule=schedule, lr_multipliers=multipliers,
                           runtime_momentum=runtime)
            ours, _ = _jax_run(tx, problem, dtype)
            reference = _torch_run(problem, torch_dtype, **settings, scheduler=scheduler,
                                   multipliers=multipliers)
            error = _relative_error(ours, reference)
            assert error <= tolerance, (settings, scheduler, multipliers, error)
            moved = _relative_error(problem[0], reference)
            assert moved > 1e-3  # the parameters really travelled, so agreement means something
            worst = max(worst, error)
    print(f"largest relative error against torch ({'float64' if x64 else 'float32'}): {worst:.3g}")


def test_set_hyperparams_equals_fresh_optimizer():
    problem = _problem()
    schedule = optim.multi_step_schedule(MILESTONES)
    with jax.enable_x64(True):
        built = optim.sgd(0.2, 0.0, weight_decay=0.0, lr_schedule=schedule)
        fresh = optim.sgd(0.03, 0.9, weight_decay=1e-3, lr_schedule=schedule)
        params = jax.tree.map(jnp.asarray, problem[0])
        state = optim.set_hyperparams(built.init(params), learning_rate=0.03, momentum=0.9, weight_decay=1e-3)
        assert {k: float(v) for k, v in optim.get_hyperparams(state).items()} == pytest.approx(
            {"learning_rate": 0.03, "momentum": 0.9, "weight_decay": 1e-3, "head_weight_decay": 0.01},
            rel=1e-15)
        ours, _ = _jax_run(built, problem, jnp.float64, state=state)
        expected, _ = _jax_run(fresh, problem, jnp.float64)
    for a, b in zip(_leaves(ours), _leaves(expected)):
        np.testing.assert_array_equal(a, b)


def test_vmapped_state_equals_separate_runs():
    points = {"learning_rate": [0.05, 0.02, 0.1], "momentum": [0.9, 0.0, 0.5],
              "weight_decay": [1e-4, 0.0, 5e-3]}
    problem = _problem()
    with jax.enable_x64(True):
        tx = optim.sgd(0.01, 0.9, weight_decay=1e-4, lr_schedule=optim.multi_step_schedule(MILESTONES))
        params = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 3), problem[0])
        values = {name: jnp.array(value) for name, value in points.items()}
        states = optim.set_hyperparams(jax.vmap(tx.init)(params), **values)
        assert optim.get_hyperparams(states)["momentum"].shape == (3,)
        run_point = lambda p, s: _jax_run(tx, problem, jnp.float64, params=p, state=s)  # noqa: E731
        stacked, _ = jax.vmap(run_point)(params, states)
        for i in range(3):
            single = optim.sgd(points["learning_rate"][i], points["momentum"][i],
                               weight_decay=points["weight_decay"][i],
                               lr_schedule=optim.multi_step_schedule(MILESTONES))
            expected, _ = _jax_run(single, problem, jnp.float64)
            for a, b in zip(_leaves(stacked), _leaves(expected)):
                np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=0)


def test_set_hyperparams_rejects_bad_values():
    tx = optim.sgd(0.1, 0.9, lr_schedule=optim.constant_schedule())
    state = tx.init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="momentum"):
        optim.set_hyperparams(state, momentum=1.0)
    with pytest.raises(ValueError, match="unknown hyperparameter 'beta'"):
        optim.set_hyperparams(state, beta=0.1)
    with pytest.raises(ValueError, match="stacked state"):
        optim.set_hyperparams(state, learning_rate=jnp.array([0.1, 0.2]))
    scheduled = optim.sgd(optax.constant_schedule(0.1), 0.9).init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="schedule"):
        optim.set_hyperparams(scheduled, learning_rate=0.2)


def test_callable_learning_rate_is_evaluated_per_step():
    problem = _problem()
    with jax.enable_x64(True):
        scheduled = optim.sgd(optax.piecewise_constant_schedule(BASE_LR, {40: 0.1, 90: 0.1}), 0.9)
        ours, _ = _jax_run(scheduled, problem, jnp.float64)
    reference = _torch_run(problem, torch.float64, momentum=0.9, scheduler="multistep")
    assert _relative_error(ours, reference) <= 1e-10


def test_decoupled_matches_independent_sgdw():
    problem = _problem()
    with jax.enable_x64(True):
        tx = optim.sgd(BASE_LR, 0.9, weight_decay=0.05, weight_decay_mode="decoupled",
                       lr_schedule=optim.multi_step_schedule(MILESTONES))
        ours, _ = _jax_run(tx, problem, jnp.float64)
    reference = _torch_run(problem, torch.float64, momentum=0.9, weight_decay=0.05, sgdw=True)
    coupled = _torch_run(problem, torch.float64, momentum=0.9, weight_decay=0.05)
    assert _relative_error(ours, reference) <= 1e-10
    assert _relative_error(coupled, reference) > 1e-3  # the two modes really differ here


@pytest.mark.parametrize("head_by", ["head_name", "absent_from_anchor"])
def test_l2sp_matches_penalised_torch_loss(head_by):
    problem = _problem()
    rng = np.random.default_rng(1)
    anchor = jax.tree.map(lambda x: x + 0.5 * rng.standard_normal(np.shape(x)), problem[0])
    if head_by == "head_name":  # the pretrained net's own classifier: another shape, replaced
        anchor["fc"] = {"kernel": np.zeros((6, 1000)), "bias": np.zeros(1000)}
    else:
        del anchor["fc"]
    head_name = "fc" if head_by == "head_name" else None
    strength, head_strength = 0.05, 0.02
    paths = optim._leaf_paths(problem[0])
    anchor_by_path = dict(zip(optim._leaf_paths(anchor), _leaves(anchor)))

    def penalty(tensors):
        total = 0.0
        for path, w in zip(paths, tensors):
            if path.startswith("fc/"):
                total = total + head_strength / 2 * (w**2).sum()
            else:
                w0 = torch.tensor(anchor_by_path[path], dtype=torch.float64)
                total = total + strength / 2 * ((w - w0) ** 2).sum()
        return total

    with jax.enable_x64(True):
        tx = optim.sgd(BASE_LR, 0.9, weight_decay=strength, weight_decay_mode="l2sp", anchor_params=anchor,
                       head_weight_decay=head_strength, head_name=head_name,
                       lr_schedule=optim.multi_step_schedule(MILESTONES))
        ours, _ = _jax_run(tx, problem, jnp.float64)
    reference = _torch_run(problem, torch.float64, momentum=0.9, penalty=penalty)
    assert _relative_error(ours, reference) <= 1e-10
    assert _relative_error(_torch_run(problem, torch.float64, momentum=0.9), reference) > 1e-3


def test_l2sp_errors():
    params = {"fc": {"kernel": jnp.ones((2, 3))}, "conv": {"kernel": jnp.ones(3)}}
    with pytest.raises(ValueError, match="anchor_params"):
        optim.sgd(0.1, 0.9, weight_decay_mode="l2sp")
    mismatched = optim.sgd(0.1, weight_decay_mode="l2sp", anchor_params={"fc": {"kernel": jnp.ones((2, 9))},
                                                                         "conv": {"kernel": jnp.ones(3)}})
    with pytest.raises(ValueError, match="head_name"):
        mismatched.init(params)
    with pytest.raises(ValueError, match="shares no parameter path"):
        optim.sgd(0.1, weight_decay_mode="l2sp", anchor_params={"other": jnp.ones(3)}).init(params)


@pytest.mark.parametrize("mode,mask,decayed", [
    ("l2", "kernels", {"conv/kernel", "fc/kernel"}),
    ("decoupled", "kernels", {"conv/kernel", "fc/kernel"}),
    ("l2", {"conv": True, "fc": False, "scale": True}, {"conv/kernel", "conv/bias", "scale"}),
    ("l2", lambda p: jax.tree.map(lambda x: x.ndim == 2, p), {"fc/kernel"}),
])
def test_decay_mask_leaves_other_leaves_untouched(mode, mask, decayed):
    problem = _problem()  # separable loss (no coupling): each leaf's path depends only on itself
    with jax.enable_x64(True):
        run = lambda wd, mask: _jax_run(  # noqa: E731
            optim.sgd(BASE_LR, 0.9, weight_decay=wd, weight_decay_mode=mode, decay_mask=mask),
            problem, jnp.float64, coupling=0.0)[0]
        masked, plain = run(0.05, mask), run(0.0, "all")
    for path, a, b in zip(optim._leaf_paths(masked), _leaves(masked), _leaves(plain)):
        if path in decayed:
            assert np.max(np.abs(a - b)) > 1e-3, path
        else:
            np.testing.assert_array_equal(a, b, err_msg=path)


def test_lr_multipliers_freeze_and_scale():
    problem = _problem()
    problem[0]["fc2"], problem[1]["fc2"], problem[2]["fc2"] = np.ones(3), np.zeros(3), np.ones(3)
    with jax.enable_x64(True):
        run = lambda lr, multipliers: _jax_run(  # noqa: E731
            optim.sgd(lr, 0.9, weight_decay=1e-3, lr_multipliers=multipliers,
                      lr_schedule=optim.multi_step_schedule(MILESTONES)),
            problem, jnp.float64, coupling=0.0)[0]
        plain, tenfold = run(0.01, None), run(0.1, None)
        frozen, boosted = run(0.01, {"fc": 0.0}), run(0.01, {"fc": 10.0})
    for path in ("fc/kernel", "fc/bias"):  # 'fc' is a path prefix, so 'fc2' is not in the group
        np.testing.assert_array_equal(frozen["fc"][path[3:]], problem[0]["fc"][path[3:]])
        np.testing.assert_allclose(boosted["fc"][path[3:]], tenfold["fc"][path[3:]], rtol=1e-13)
    for run_ in (frozen, boosted):
        for key in ("conv", "scale", "fc2"):
            for a, b in zip(_leaves(run_[key]), _leaves(plain[key])):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="match no parameter"):
        optim.sgd(0.1, lr_multipliers={"fcc": 2.0}).init({"fc": jnp.ones(2)})


def test_nested_prefix_multiplier():
    params = {"layer4": {"0": {"kernel": jnp.ones(2)}, "1": {"kernel": jnp.ones(2)}}}
    tx = optim.sgd(0.1, lr_multipliers={"layer4": 2.0, "layer4/1": 0.0})
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["layer4"]["0"]["kernel"], -0.2)
    np.testing.assert_array_equal(updates["layer4"]["1"]["kernel"], 0.0)


def test_effective_hyperparameters_round_trip_and_validate():
    for lr, m in [(0.01, 0.9), (0.1, 0.0), (0.005, 0.99)]:
        assert optim.effective_learning_rate(lr, m) == pytest.approx(lr / (1 - m), rel=1e-15)
        effective = optim.effective_learning_rate(lr, m)
        assert optim.learning_rate_from_effective(effective, m) == pytest.approx(lr, rel=1e-14)
        effective = optim.effective_weight_decay(1e-4, lr)
        assert optim.weight_decay_from_effective(effective, lr) == pytest.approx(1e-4, rel=1e-14)
    assert optim.effective_weight_decay(1e-4, 0.01) == pytest.approx(0.01)
    per_point = optim.effective_learning_rate(np.array([0.01, 0.001]), np.array([0.9, 0.0]))
    np.testing.assert_allclose(per_point, [0.1, 0.001])
    for call, match in [
        (lambda: optim.effective_learning_rate(0.01, 1.0), "momentum"),
        (lambda: optim.effective_learning_rate(0.01, -0.1), "momentum"),
        (lambda: optim.learning_rate_from_effective(0.1, 1.5), "momentum"),
        (lambda: optim.effective_learning_rate(0.0, 0.9), "learning_rate"),
        (lambda: optim.effective_weight_decay(1e-4, -0.01), "learning_rate"),
        (lambda: optim.effective_weight_decay(-1e-4, 0.01), "weight_decay"),
        (lambda: optim.weight_decay_from_effective(0.01, 0.0), "learning_rate"),
        (lambda: optim.sgd(0.1, 1.0), "momentum"),
        (lambda: optim.sgd(-0.1), "learning_rate"),
        (lambda: optim.sgd(0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: optim.sgd(0.1, 0.9, nesterov=True, dampening=0.1), "dampening"),
        (lambda: optim.sgd(0.1, weight_decay_mode="l1"), "weight_decay_mode"),
        (lambda: optim.sgd(0.1, decay_mask="biases"), "decay_mask"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()


def test_equal_effective_learning_rate_reaches_the_same_point():
    """On L = sum(l_i w_i^2) / 2, SGD with (lr, m) and plain SGD with eta' = lr / (1 - m) agree to
    first order in eta' l. Heavy ball's slow mode decays by r = 1 - eta' l - m / (1 - m) (eta' l)^2
    per step, with amplitude 1 + m / (1 - m) eta' l (its start-up lag of m / (1 - m) steps). So
    w_i differs from plain SGD's by a ratio within m / (1 - m) eta' l (1 + N eta' l): with
    m = 0.9, eta' l <= 1e-3 and N = 3000 steps that is 9e-3 * 4 = 3.6%, the tolerance (the exact
    roots give 1.8% here). The same raw lr with m = 0.9 is ten times faster: far outside it."""
    curvature = jnp.linspace(0.2, 1.0, 8)
    effective, momentum, steps = 1e-3, 0.9, 3000
    start = jnp.ones(8)

    def endpoint(momentum, learning_rate):
        tx = optim.sgd(learning_rate, momentum)

        def body(carry, _):
            weights, state = carry
            updates, state = tx.update(curvature * weights, state, weights)
            return (weights + updates, state), None

        return jax.jit(lambda w: jax.lax.scan(body, (w, tx.init(w)), None, length=steps)[0][0])(start)

    plain = endpoint(0.0, effective)
    with_momentum = endpoint(momentum, optim.learning_rate_from_effective(effective, momentum))
    same_raw_lr = endpoint(momentum, effective)
    bound = momentum / (1 - momentum) * effective * 1.0 * (1 + steps * effective * 1.0)
    assert float(jnp.max(jnp.abs(with_momentum / plain - 1))) <= bound
    assert float(jnp.max(jnp.abs(same_raw_lr / plain - 1))) > 0.5  # the test can fail


def test_schedules_match_torch_schedulers():
    steps = np.arange(300)
    with jax.enable_x64(True):
        ours = {
            "multistep": optim.multi_step_schedule([100, 200], 0.1)(jnp.asarray(steps)),
            "step": optim.step_decay_schedule(70, 0.5)(jnp.asarray(steps)),
            "cosine": optim.cosine_schedule(300)(jnp.asarray(steps)),
        }
    factories = {
        "multistep": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [100, 200], 0.1),
        "step": lambda o: torch.optim.lr_scheduler.StepLR(o, 70, 0.5),
        "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 300),
    }
    for name, factory in factories.items():
        sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler, rates = factory(sgd), []
        for _ in steps:
            rates.append(scheduler.get_last_lr()[0])
            sgd.step()
            scheduler.step()
        np.testing.assert_allclose(np.asarray(ours[name]), rates, rtol=1e-12, atol=1e-15, err_msg=name)
    warm = optim.linear_warmup(optim.constant_schedule(), 4)(jnp.arange(6))
    np.testing.assert_allclose(warm, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def _config(**optimizer_fields):
    config = default_config.get_config()
    for name, value in optimizer_fields.items():
        setattr(config.optimizer, name, value)
    return config


def test_from_config_resolves_the_paper_defaults():
    config = _config()
    tx, resolved = optim.from_config(config.optimizer, config.schedule, steps_per_epoch=10, total_steps=3000,
                                     params={"fc": jnp.ones(2)})
    assert (resolved["learning_rate"], resolved["momentum"], resolved["weight_decay"]) == (0.01, 0.9, 1e-4)
    assert resolved["effective_learning_rate"] == pytest.approx(0.1)
    assert resolved["effective_weight_decay"] == pytest.approx(0.01)
    assert resolved["decay_steps"] == [1500, 2500] and resolved["schedule"] == "step"
    schedule = optim.schedule_from_config(config.schedule, steps_per_epoch=10, total_steps=3000)
    factors = schedule(jnp.array([0, 1499, 1500, 2499, 2500]))
    np.testing.assert_allclose(factors, [1, 1, 0.1, 0.1, 0.01], rtol=1e-6)
    hyperparams = optim.get_hyperparams(tx.init({"w": jnp.ones(2)}))
    assert {k: float(v) for k, v in hyperparams.items()} == pytest.approx(
        {"learning_rate": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "head_weight_decay": 0.01})


def test_from_config_effective_placeholders():
    config = _config(effective_learning_rate=0.5, effective_weight_decay=0.02, momentum=0.8)
    _, resolved = optim.from_config(config.optimizer, config.schedule, steps_per_epoch=1, total_steps=10)
    assert resolved["learning_rate"] == pytest.approx(0.5 * 0.2)
    assert resolved["weight_decay"] == pytest.approx(0.02 * 0.1)
    assert resolved["effective_learning_rate"] == pytest.approx(0.5)
    config.schedule.name, config.schedule.warmup_epochs = "cosine", 2
    schedule = optim.schedule_from_config(config.schedule, steps_per_epoch=1, total_steps=10)
    np.testing.assert_allclose(schedule(jnp.array([0, 1, 2, 6, 10])), [0.5, 1.0, 1.0, 0.5, 0.0], atol=1e-6)


def test_resolve_point_matches_the_points_own_config():
    """A batched grid resolves each point from the base run's values; that must equal resolving the
    point's own config (its fields set on the base config), effective_* placeholders included."""
    points = [{"momentum": 0.0}, {"momentum": 0.9, "effective_learning_rate": 0.05},
              {"learning_rate": 0.2, "weight_decay": 5e-4}, {"effective_weight_decay": 0.1},
              {"head_weight_decay": 0.0}]
    for base_fields in ({}, {"effective_learning_rate": 0.1}, {"effective_weight_decay": 0.02}):
        config = _config(**base_fields)
        _, base = optim.from_config(config.optimizer, config.schedule, steps_per_epoch=1, total_steps=10)
        for point in points:
            own = _config(**{**base_fields, **point})
            expected = optim.resolve_hyperparameters(own.optimizer)
            resolved = optim.resolve_point(base, point)
            for key, value in expected.items():
                assert resolved[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float)
                                         else value), (base_fields, point, key)
            assert resolved["decay_steps"] == base["decay_steps"]
    assert optim.resolve_point(base, {"momentum": 0.9})["learning_rate"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="nesterov"):
        optim.resolve_point(base, {"nesterov": True})


def test_current_learning_rate_follows_the_schedule():
    tx = optim.sgd(0.2, 0.9, lr_schedule=optim.multi_step_schedule([3], 0.1))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    rates = [float(optim.current_learning_rate(state))]  # before any update: the first one's rate
    for _ in range(5):
        _, state = tx.update(params, state, params)
        rates.append(float(optim.current_learning_rate(state)))
    np.testing.assert_allclose(rates, [0.2, 0.2, 0.2, 0.2, 0.02, 0.02], rtol=1e-6)
    two = jax.tree.map(lambda x: jnp.stack([x, x]), params)
    stacked = optim.set_hyperparams(jax.vmap(tx.init)(two), learning_rate=jnp.array([0.1, 0.3]))
    _, stacked = jax.vmap(tx.update)(two, stacked, two)
    np.testing.assert_allclose(optim.current_learning_rate(stacked), [0.1, 0.3], rtol=1e-6)


def test_runtime_head_weight_decay_and_static_momentum():
    problem = _problem()
    anchor = {key: value for key, value in problem[0].items() if key != "fc"}
    with jax.enable_x64(True):
        build = lambda head_wd: optim.sgd(  # noqa: E731
            BASE_LR, 0.9, weight_decay=0.01, weight_decay_mode="l2sp", anchor_params=anchor,
            head_weight_decay=head_wd)
        tx = build(0.01)
        params = jax.tree.map(jnp.asarray, problem[0])
        state = optim.set_hyperparams(tx.init(params), head_weight_decay=0.3)
        ours, _ = _jax_run(tx, problem, jnp.float64, state=state)
        expected, _ = _jax_run(build(0.3), problem, jnp.float64)
    for a, b in zip(_leaves(ours), _leaves(expected)):
        np.testing.assert_array_equal(a, b)
    static = optim.sgd(0.1, 0.0, runtime_momentum=False)
    state = static.init({"w": jnp.ones(3)})
    assert "momentum" not in optim.get_hyperparams(state)
    assert not jax.tree_util.tree_leaves(state.inner_state[1].momentum_buffer)  # m = 0: no buffer
    with pytest.raises(ValueError, match="unknown hyperparameter 'momentum'"):
        optim.set_hyperparams(state, momentum=0.9)
    tx, _ = optim.from_config(_config().optimizer, _config().schedule, steps_per_epoch=1, total_steps=10,
                              runtime_momentum=False)
    assert "momentum" not in optim.get_hyperparams(tx.init({"w": jnp.ones(3)}))


@pytest.mark.parametrize("field,value,match", [
    ("momentum", 1.0, "config.optimizer.momentum"),
    ("learning_rate", -0.1, "config.optimizer.learning_rate"),
    ("effective_learning_rate", 0.0, "config.optimizer.effective_learning_rate"),
    ("weight_decay", -1e-4, "config.optimizer.weight_decay"),
    ("weight_decay_mode", "l1", "config.optimizer.weight_decay_mode"),
    ("decay_mask", "biases", "config.optimizer.decay_mask"),
    ("weight_decay_mode", "l2sp", "anchor_params"),
    ("lr_multipliers", ml_collections.ConfigDict({"fcc": 10.0}), "lr_multipliers"),
    ("schedule.name", "linear", "config.schedule.name"),
    ("schedule.decay_factor", 0.0, "config.schedule.decay_factor"),
])
def test_from_config_errors_name_the_field(field, value, match):
    config = default_config.get_config()
    section, name = field.split(".") if "." in field else ("optimizer", field)
    setattr(config[section], name, value)
    with pytest.raises(ValueError, match=match):
        optim.from_config(config.optimizer, config.schedule, steps_per_epoch=1, total_steps=10,
                          params={"fc": jnp.ones(2)})
