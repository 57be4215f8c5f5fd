"""Batched grid against sequential runs: K grid points (learning rate x momentum) trained for N
steps as one vmapped program, as `train.train_points` does, against K single-point runs one
after another, as a grid with `grid.batched=False` does. Not a test; prints points*steps/s of
each, the ratio and compile times.

    .venv/bin/python scripts/bench_grid.py --model resnet18 --image-size 112 --points 4 --steps 5

Both sides use train.py's own pieces on configs/default.py (random init, SGD with weight decay
1e-4): batched, `stack_points` + `jax.vmap(make_train_step)` with runtime momentum on a grid
mesh; sequential, per point its own `optim.from_config` (static momentum, so m = 0 keeps no
buffer), state and jitted step, as each point's `train_and_evaluate` builds them. Points of one
momentum run the same program (the learning rate is state), compiled once here; the sequential
compile time shown is K compiles, as a sequential grid pays. One synthetic batch in memory, so
the input pipeline is not measured. Compilation and two warm-up steps are excluded from the
rates; the second step's losses (after each point's first update) must agree between the sides.
Then `--rounds` rounds of N steps (K x N for the sequential side) alternate and each side's best
round counts.
"""
import torch  # noqa: F401 - before jax/tensorflow: the other order crashes on some machines

import itertools
import json
import os
import pathlib
import sys
import time

import numpy as np

import bench_common

REPO = pathlib.Path(__file__).resolve().parents[1]
LEARNING_RATES = (0.01, 0.005, 0.002, 0.001, 0.02, 0.05, 0.0005, 0.1)
MOMENTA = (0.9, 0.0)


def main() -> None:
    arguments = bench_common.parser(__doc__.split("\n\n")[0])
    arguments.add_argument("--points", type=int, default=4, help="K, at most 16")
    arguments.add_argument("--steps", type=int, default=5, help="N, timed steps per round")
    arguments.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                           help="gpu: JAX's default backend (the accelerator if there is one)")
    arguments.add_argument("--threads", type=int, default=None,
                           help="CPUs XLA may use (its thread pool follows the affinity)")
    args = arguments.parse_args()
    cpus = bench_common.allowed_cpus(args.threads)
    os.sched_setaffinity(0, cpus)
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, str(REPO))
    import jax
    from configs import default
    from jaxft import mesh as mesh_lib
    from jaxft import optim, train

    config = default.get_config()
    config.model, config.pretrained = args.model, ""
    config.input.image_size, config.batch_size = args.image_size, args.batch_size
    points = [{"learning_rate": lr, "momentum": m}
              for lr, m in itertools.product(LEARNING_RATES, MOMENTA)][:args.points]
    model = train.create_model(config, args.num_classes)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = train.initial_variables(config, model, init_rng)
    rng = np.random.RandomState(0)
    batch = {"image": rng.standard_normal((args.batch_size, args.image_size, args.image_size, 3))
             .astype(np.float32),
             "label": rng.randint(0, args.num_classes, args.batch_size).astype(np.int32)}

    def optimizer(optimizer_config, runtime_momentum):
        return optim.from_config(optimizer_config, config.schedule, steps_per_epoch=100,
                                 total_steps=30_000, params=variables["params"],
                                 runtime_momentum=runtime_momentum)

    def compiled_step(step, state, mesh):
        placed = mesh_lib.global_batch(batch, mesh)
        start = time.perf_counter()
        compiled = jax.jit(step, donate_argnums=0).lower(state, placed).compile()
        return compiled, placed, time.perf_counter() - start

    # Batched: one program for all K points.
    tx, base = optimizer(config.optimizer, runtime_momentum=True)
    stacked, _ = train.stack_points(train.initial_state(variables, tx, state_rng), base, points)
    mesh = mesh_lib.grid_mesh(len(points))
    batched = {"state": mesh_lib.shard_points(stacked, mesh)}
    step = jax.vmap(train.make_train_step(model, tx), in_axes=(0, None))
    batched["step"], batched["batch"], batched["compile_s"] = compiled_step(
        step, batched["state"], mesh)

    # Sequential: each point its own optimizer, state and step; one program per momentum.
    runs, programs, mesh = [], {}, mesh_lib.grid_mesh(1)
    for point in points:
        point_config = config.optimizer.copy_and_resolve_references()
        point_config.learning_rate, point_config.momentum = (point["learning_rate"],
                                                             point["momentum"])
        tx, _ = optimizer(point_config, runtime_momentum=False)
        run = {"state": mesh_lib.replicate(train.initial_state(variables, tx, state_rng), mesh)}
        if point["momentum"] not in programs:
            programs[point["momentum"]] = compiled_step(
                train.make_train_step(model, tx), run["state"], mesh)
        run["step"], run["batch"], run["compile_s"] = programs[point["momentum"]]
        runs.append(run)

    def advance(runs, steps):
        start = time.perf_counter()
        for run in runs:
            for _ in range(steps):
                run["state"], run["metrics"] = run["step"](run["state"], run["batch"])
            jax.block_until_ready(run["state"])
        return time.perf_counter() - start

    advance([batched] + runs, 2)  # warm-up; the second loss already depends on each point
    losses = {"batched": np.asarray(batched["metrics"]["loss"]).reshape(-1),
              "sequential": np.array([float(run["metrics"]["loss"]) for run in runs])}
    difference = float(np.max(np.abs(losses["batched"] - losses["sequential"])))
    assert difference < 1e-2 * max(1.0, float(np.max(np.abs(losses["sequential"])))), losses
    rounds = {"batched": [], "sequential": []}
    for _ in range(args.rounds):
        rounds["batched"].append(len(points) * args.steps / advance([batched], args.steps))
        rounds["sequential"].append(len(points) * args.steps / advance(runs, args.steps))
    rate = {side: max(values) for side, values in rounds.items()}
    compile_s = {"batched": batched["compile_s"],
                 "sequential": sum(run["compile_s"] for run in runs)}  # K compiles

    print(f"grid, {args.model}, {args.image_size} px, batch {args.batch_size}, "
          f"K = {len(points)} points, {jax.devices()[0].platform} x {jax.device_count()}, "
          f"{len(cpus)} CPU threads, best of {args.rounds} rounds x {args.steps} steps, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("points: " + ", ".join(f"lr {p['learning_rate']:g} m {p['momentum']:g}"
                                 for p in points))
    print(f"{'side':>11} {'points*steps/s':>15} {'rounds':>14} {'compile s':>10} "
          f"{'compile + N steps s':>20}")
    for side in rounds:
        total = compile_s[side] + len(points) * args.steps / rate[side]
        print(f"{side:>11} {rate[side]:>15.2f} "
              f"{' '.join(f'{r:.2f}' for r in rounds[side]):>14} {compile_s[side]:>10.1f} "
              f"{total:>20.1f}")
    print(f"batched / sequential: {rate['batched'] / rate['sequential']:.2f}x steady state; "
          f"compiles: 1 vs {len(points)} ({len(programs)} distinct, compiled here); "
          f"second-step losses agree to {difference:.1e}")
    if args.output:
        record = {"bench": "grid", "command": " ".join(sys.argv), **{
            k: v for k, v in vars(args).items() if k != "output"}, "points_list": points,
            "platform": jax.devices()[0].platform, "cpu_threads": len(cpus),
            "load_average": os.getloadavg()[0], "points_steps_per_s": rate,
            "rounds_points_steps_per_s": rounds, "compile_s": compile_s,
            "ratio": rate["batched"] / rate["sequential"]}
        with open(args.output, "a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
