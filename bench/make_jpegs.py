#!/usr/bin/python3
"""Writes a seeded ImageFolder tree of real JPEGs (Pillow): FILES images in CLASSES class folders
(c000/ ... c099/), each of a random size (sides MIN_PX to MAX_PX) at QUALITY, drawn as a colour
gradient with shapes over it and some sensor-like noise, so that they compress and decode as
photos do (tens of KiB each), not as noise or flat colour. The same seed gives the same bytes.

    make_jpegs.py DIR --files 3000 --classes 100 --seed 5 [--min-px 200 --max-px 500 --quality 85]
"""
import argparse
import multiprocessing
import os
import random

from PIL import Image, ImageDraw, ImageFilter


def make_one(job):
    path, seed, min_px, max_px, quality = job
    rng = random.Random(seed)
    w, h = rng.randint(min_px, max_px), rng.randint(min_px, max_px)
    channels = [Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize((w, h)) for _ in range(3)]
    im = Image.merge("RGB", channels)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 12)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = [x0, y0, x0 + rng.randint(10, w // 2), y0 + rng.randint(10, h // 2)]
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2)))
    noise = Image.effect_noise((w, h), rng.uniform(8, 24)).convert("RGB")
    im = Image.blend(im, noise, 0.15)
    im.save(path, "JPEG", quality=quality)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--min-px", type=int, default=200)
    ap.add_argument("--max-px", type=int, default=500)
    ap.add_argument("--quality", type=int, default=85)
    a = ap.parse_args()
    jobs = []
    for c in range(a.classes):
        os.makedirs(os.path.join(a.dir, f"c{c:03d}"), exist_ok=True)
    for i in range(a.files):
        path = os.path.join(a.dir, f"c{i % a.classes:03d}", f"img{i:06d}.jpg")
        jobs.append((path, a.seed * 1_000_003 + i, a.min_px, a.max_px, a.quality))
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(make_one, jobs, chunksize=64)


if __name__ == "__main__":
    main()
