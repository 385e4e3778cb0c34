"""Input pipeline vs. model: which one limits fine-tuning throughput on this machine?

    python -m experiments.bench.input_pipeline --size=384 --model=ViT-Ti_16 --batch_size=16

Writes a folder of JPEG photos (scikit-image's samples, re-encoded at ImageNet-like
sizes), reads it with the paper's fine-tuning recipe (decode, Inception crop, flip,
value range) at `--size`, and times a jitted forward+backward+SGD step of `--model` at
the same resolution. Prints images/s of both; the smaller number is the bottleneck.
"""

import argparse
import itertools
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import skimage.data
import skimage.transform
from PIL import Image

from vit_jax import data
from vit_jax.models import get_model

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")


def write_photo_folder(root: str, num_images: int, num_classes: int = 4) -> str:
    """`num_images` JPEGs of about 500x375 px (ImageNet's typical size) in class folders."""
    photos = [getattr(skimage.data, name)() for name in _PHOTOS]
    for i in range(num_images):
        photo = photos[i % len(photos)]
        photo = skimage.transform.resize(photo, (375, 500), preserve_range=True).astype(np.uint8)
        folder = os.path.join(root, f"class{i % num_classes}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(np.roll(photo, 7 * i, axis=1)).save(f"{folder}/{i}.jpg", quality=90)
    return root


def pipeline_images_per_second(name: str, size: int, batch_size: int, steps: int) -> float:
    batches = data.get_iterator(
        name,
        "train",
        batch_size=batch_size,
        preprocess=data.recipe("finetune", size),
        process_index=0,
        process_count=1,
    )
    next(batches)  # graph construction and first fills are not throughput
    start = time.perf_counter()
    for step, _ in enumerate(itertools.islice(batches, steps), 1):
        if step % 10 == 0:
            print(f"  pipeline: {step}/{steps} batches", flush=True)
    return steps * batch_size / (time.perf_counter() - start)


def model_images_per_second(model_name: str, size: int, batch_size: int, steps: int) -> float:
    model = get_model(model_name, num_classes=1000)
    images = jnp.zeros((batch_size, size, size, 3), jnp.float32)
    labels = jax.nn.one_hot(jnp.arange(batch_size) % 1000, 1000)
    params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
    optimizer = optax.sgd(0.01, momentum=0.9)

    @jax.jit
    def train_step(params, opt_state):
        def loss_fn(p):
            logits = model.apply({"params": p}, images)
            return optax.softmax_cross_entropy(logits, labels).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    params, opt_state = jax.block_until_ready(train_step(params, opt_state))  # compile
    start = time.perf_counter()
    for step in range(1, steps + 1):
        params, opt_state = train_step(params, opt_state)
        jax.block_until_ready(params)
        print(f"  model: {step}/{steps} steps", flush=True)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--model", default="ViT-Ti_16")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--pipeline_steps", type=int, default=30)
    parser.add_argument("--model_steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        write_photo_folder(root, num_images=96)
        fed = pipeline_images_per_second(
            f"folder:{root}", args.size, args.batch_size, args.pipeline_steps
        )
    used = model_images_per_second(args.model, args.size, args.batch_size, args.model_steps)
    devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    print(
        f"\nFine-tuning recipe at {args.size}px, batch {args.batch_size}, "
        f"{os.cpu_count()} CPU cores, {devices}:"
    )
    print(f"  input pipeline : {fed:10.1f} images/s")
    print(f"  {args.model} train step: {used:10.1f} images/s")
    bottleneck = "input pipeline" if fed < used else "model"
    print(f"  bottleneck: the {bottleneck} ({max(fed, used) / min(fed, used):.1f}x slower side)")


if __name__ == "__main__":
    main()
