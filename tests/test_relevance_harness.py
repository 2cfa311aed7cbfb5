"""The relevance benchmark harness on a small slice: sample photos with captions written here."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from django.test import override_settings
from PIL import Image, ImageOps

from benchmarks import relevance as bench
from django_semantic_images.encoders import registry
from django_semantic_images.metrics import rank_of, retrieval_scores, summarise

# Words that name no ImageNet class: only alt text or a learned bridge can tie them to pictures.
NAMES = {
    "chelsea": "Portrait of Winifred",
    "coffee": "Morning ritual of Bartholomew",
    "rocket": "Launch day at Kestrel point",
    "horse": "Pennywhistle in the paddock",
    "motorcycle_left": "Ignatius and his old machine",
    "china": "Temple visit of the Quimby family",
}
EDITS = (
    lambda im: im,
    ImageOps.mirror,
    lambda im: im.crop((im.width // 8, im.height // 8, im.width, im.height)),
    lambda im: ImageOps.autocontrast(im.rotate(6)),
    lambda im: im.crop((0, 0, im.width * 7 // 8, im.height * 7 // 8)),
)


def captions_for(name: str) -> list[str]:
    return [name, f"A photo: {name}", f"{name}, again", f"Here is {name}", f"{name} once more"]


def write_folder(root: Path, sample_paths: dict[str, Path], captions: dict[str, list[str]], edits=EDITS[:1]) -> Path:
    (root / "images").mkdir(parents=True)
    with (root / "captions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        for stem, caps in captions.items():
            image = Image.open(sample_paths[stem]).convert("RGB")
            image.thumbnail((320, 320))
            for i, edit in enumerate(edits):
                edit(image).save(root / "images" / f"{stem}-{i}.jpg")
                writer.writerows([f"{stem}-{i}.jpg", c] for c in caps)
    return root


def test_rank_breaks_ties_at_random_and_summarises():
    import numpy as np

    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1])
    ranks = {rank_of(scores, 0, np.random.default_rng(seed)) for seed in range(40)}
    assert ranks == {2, 3, 4}  # one better row, then three tied: 2, 3 or 4
    s = summarise([1, 3, 7, 20])
    assert (s.r1, s.r5, s.r10, s.median_rank) == (25.0, 50.0, 75.0, 5.0)
    perfect = retrieval_scores(np.eye(3), np.eye(3), np.arange(3))
    assert perfect.r1 == 100.0 and perfect.median_rank == 1


@pytest.mark.django_db(transaction=True)
def test_every_mode_runs_through_the_database_on_a_small_slice(tmp_path, sample_paths, settings):
    test_dir = write_folder(tmp_path / "test", sample_paths, {k: captions_for(v) for k, v in NAMES.items()})
    names = {stem: [name] * 2 for stem, name in NAMES.items()}
    train_dir = write_folder(tmp_path / "train", sample_paths, names, edits=EDITS)
    media = tmp_path / "media"
    media.mkdir()
    test = bench.Captioned.read(test_dir)
    train = bench.Captioned.read(train_dir)
    settings.MEDIA_ROOT = str(media)
    with override_settings(SEMANTIC_IMAGES={"BRIDGE_DIR": str(tmp_path / "bridges")}):
        registry.reset()
        # A tiny library needs small limits for the command's held-out check.
        options = {"epochs": 30, "min_images": 10, "holdout": 0.3}
        results = bench.run_benchmark(test, train, media_root=media, fractions=(0.5, 1.0), bridge_options=options)
    registry.reset()

    modes = [(r.encoder, r.mode) for r in results]
    assert modes == [
        (enc, mode)
        for enc in ("conse", "conse+bridge")
        for mode in ("images", "images, 4 queries", "alt 50%", "alt 100%")
    ]
    by = {(r.encoder, r.mode): r.scores for r in results}
    assert by[("conse", "images")].queries == 30
    assert by[("conse", "alt 50%")].queries == 24
    # With its own words as alt text every picture is found first for another caption of it.
    assert by[("conse", "alt 100%")].r1 == 100.0
    assert by[("conse", "alt 100%")].mean_rank < by[("conse", "images, 4 queries")].mean_rank
    # The bridge learned the site's words from the train split.
    assert by[("conse+bridge", "images")].mean_rank < by[("conse", "images")].mean_rank
    # The benchmark leaves no rows behind and no bridge installed.
    from photos.models import Photo

    assert not Photo.objects.exists()
    table = bench.render(results, "python benchmarks/relevance.py --limit 6", 12.0, test, train)
    assert table.count("\n| conse") == 8
    doc = tmp_path / "relevance.md"
    doc.write_text("# Relevance\n\nprose before\n")
    bench.write_table(doc, table)
    bench.write_table(doc, table.replace("R@1", "R@1 "))
    text = doc.read_text()
    assert text.count(bench.BEGIN) == 1 and "prose before" in text and "R@1 " in text
