"""The bridge training command end to end: train, install, re-embed, refuse a worse bridge."""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from PIL import Image, ImageEnhance, ImageOps

from django_semantic_images.encoders import get_encoder, registry
from django_semantic_images.encoders.bridges import BridgeStore, LearnedBridge
from django_semantic_images.encoders.conse import ConSEEncoder
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.pipeline.failures import TransientError
from django_semantic_images.training import descriptions
from photos.models import Photo

pytestmark = pytest.mark.django_db

# Words that name no ImageNet class: only a bridge learned from this site can tie them to pictures.
CAPTIONS = {
    "chelsea": "Portrait of Winifred",
    "coffee": "Morning ritual of Bartholomew",
    "rocket": "Launch day at Kestrel point",
    "astronaut": "Commander Odalys in her suit",
    "motorcycle_left": "Ignatius and his old machine",
    "horse": "Pennywhistle in the paddock",
    "china": "Temple visit of the Quimby family",
    "flower": "Grandmother Ysolde's garden",
}


def variants(image: Image.Image) -> list[Image.Image]:
    """Edited copies of one photo: the same subject, other pixels."""
    w, h = image.size
    return [
        image,
        ImageOps.mirror(image),
        image.crop((w // 10, h // 10, w, h)),
        image.crop((0, 0, w * 9 // 10, h * 9 // 10)),
        ImageEnhance.Brightness(image).enhance(1.3),
    ]


@pytest.fixture
def bridge_dir(tmp_path):
    from django_semantic_images.encoders import registry

    with override_settings(SEMANTIC_IMAGES={"BRIDGE_DIR": str(tmp_path / "bridges")}):
        registry.reset()
        yield tmp_path / "bridges"
    registry.reset()


@pytest.fixture
def captioned_site(make_photo, sample_paths):
    """Five captioned copies of each of eight photos, and one uncaptioned copy of each."""
    captioned, plain = [], {}
    for stem, caption in CAPTIONS.items():
        image = Image.open(sample_paths[stem]).convert("RGB")
        image.thumbnail((320, 320))
        copies = variants(image)
        for i, copy in enumerate(copies):
            captioned.append(make_photo(copy, name=f"{stem}-{i}.jpg", alt_text=caption))
        plain[stem] = make_photo(ImageOps.grayscale(image).convert("RGB"), name=f"{stem}-plain.jpg")
    report = embed_instances(captioned + list(plain.values()))
    assert not report.failed
    return captioned, plain


def train(*extra: str, stderr: io.StringIO | None = None) -> str:
    out = io.StringIO()
    call_command(
        "semantic_images_train_bridge",
        "--model",
        "photos.Photo",
        "--min-images",
        "20",
        "--holdout",
        "0.25",
        "--verbosity",
        "1",
        *extra,
        stdout=out,
        stderr=stderr or io.StringIO(),
    )
    return out.getvalue()


def rank_of_plain(plain: dict[str, Photo], stem: str) -> int:
    ranked = list(Photo.objects.filter(alt_text="").semantic_search(CAPTIONS[stem]).values_list("pk", flat=True))
    return ranked.index(plain[stem].pk) + 1


def test_train_install_reembed_then_refuse_a_worse_bridge(bridge_dir, captioned_site):
    captioned, plain = captioned_site
    store = BridgeStore(bridge_dir)
    before = {stem: rank_of_plain(plain, stem) for stem in CAPTIONS}

    # A dry run trains and checks, and installs nothing.
    assert "Dry run" in train("--epochs", "5", "--dry-run")
    assert store.current() is None and "+bridge" not in get_encoder().identity

    output = train("--epochs", "30")
    info = store.current_info()
    assert info is not None, output
    version = info["version"]
    assert f"Installed bridge {version}" in output
    assert info["metrics"]["held_out"]["r5"] > info["metrics"]["was"]["r5"]
    assert store.current().meta["cnn"] == "lite0"  # what system check E011 compares with the encoder's
    assert store.current().text_models == ("minilm",) == get_encoder().text_identities  # and E015

    # Every row was re-embedded with the new encoder identity.
    identity = get_encoder().identity
    assert identity.endswith(f"+bridge:{version}")
    assert set(Photo.objects.values_list("embedding_encoder", flat=True)) == {identity}

    # Pictures without any words now answer to the site's own vocabulary.
    after = {stem: rank_of_plain(plain, stem) for stem in CAPTIONS}
    assert sum(r == 1 for r in after.values()) >= 6, (before, after)
    assert sum(after.values()) < sum(before.values()), (before, after)

    # A barely trained bridge scores worse on the held-out images: refused, nothing changes.
    with pytest.raises(CommandError, match="Refused"):
        train("--epochs", "1", "--learning-rate", "1e-7", "--seed", "3")
    assert store.current_info()["version"] == version
    assert len(store.versions()) == 1
    assert get_encoder().identity == identity


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--dropout", "1.5"),  # was torch's ValueError, a traceback
        ("--dropout", "-0.1"),
        ("--temperature", "0"),  # was a traceback from the training loop
        ("--temperature", "-1"),  # trained a bridge that ranks backwards
        ("--temperature", "nan"),
        ("--learning-rate", "-1"),  # was torch's ValueError
        ("--learning-rate", "nan"),
        ("--learning-rate", "1e+39"),  # past float32: torch's RuntimeError, a traceback
        ("--temperature", "1e-46"),  # 0 in float32: NaN weights
        ("--max-holdout", "0"),  # was "Too few readable held-out images"
        ("--max-holdout", "1"),  # accepted, then "Too few readable held-out images" after the whole training
        ("--min-images", "-1"),
        ("--seed", "-1"),  # was numpy's "expected non-negative integer"
        ("--chunk-size", "9223372036854775808"),  # past PostgreSQL's bigint LIMIT: a DataError traceback
        ("--seed", "18446744073709551616"),  # past torch's 64 bits: "Overflow when unpacking long long", late
        ("--conse-weight", "nan"),
        ("--holdout", "1.5"),
    ],
)
def test_an_option_out_of_range_is_a_command_error_naming_it(bridge_dir, option, value, monkeypatch):
    """Refused before any row is read or any model loaded."""
    from django_semantic_images.management.commands import semantic_images_train_bridge as command

    def never(*args, **kwargs):
        raise AssertionError("rows were read for a command with a bad option")

    monkeypatch.setattr(command, "collect_captioned", never)
    with pytest.raises(CommandError, match=f"^{option} .*{re.escape(value)}"):
        call_command("semantic_images_train_bridge", "--model", "photos.Photo", option, value, stdout=io.StringIO())


@pytest.mark.parametrize(
    ("model", "fields"),
    [("multifield.CaptionedPhoto", "embedding, caption_embedding"), ("multifield.TwoImagePhoto", None)],
)
def test_a_model_with_several_fields_needs_field_as_the_other_commands_do(bridge_dir, model, fields, monkeypatch):
    """Without --field the command trained on whichever field came first (CaptionedPhoto's inherited
    ``embedding``, not its ``caption_embedding``), where semantic_search and semantic_images_duplicates
    refuse and list the fields; and a model with no text fields is refused naming the field."""
    from django_semantic_images.management.commands import semantic_images_train_bridge as command

    def never(*args, **kwargs):
        raise AssertionError("rows were read before the field was known")

    monkeypatch.setattr(command, "collect_captioned", never)
    with pytest.raises(CommandError, match="several ImageEmbeddingFields .*name one with --field") as found:
        call_command("semantic_images_train_bridge", "--model", model, stdout=io.StringIO())
    if fields:
        assert f"({fields})" in str(found.value)
    with pytest.raises(CommandError, match="TwoImagePhoto.thumbnail_embedding declares no text_fields"):
        call_command(
            "semantic_images_train_bridge",
            "--model",
            "multifield.TwoImagePhoto",
            "--field",
            "thumbnail_embedding",
            stdout=io.StringIO(),
        )


def test_an_ensemble_whose_last_seed_is_past_64_bits_is_refused_before_training(bridge_dir, monkeypatch):
    from django_semantic_images.management.commands import semantic_images_train_bridge as command

    def never(*args, **kwargs):
        raise AssertionError("rows were read for a command with a bad option")

    monkeypatch.setattr(command, "collect_captioned", never)
    with pytest.raises(CommandError, match="^--seed .*--ensemble"):
        train("--seed", str(2**64 - 1), "--ensemble", "2")


def test_held_out_images_the_storage_cannot_read_are_left_out_not_a_traceback(bridge_dir, make_photo, settings):
    """A held-out image whose file the storage fails to read (an OSError: here a folder where the file
    should be; an object store that is down) ended the command, after the whole training, in the
    pipeline's TransientError traceback: unreadable held-out images are left out, as undecodable ones."""
    from pathlib import Path

    (Path(settings.MEDIA_ROOT) / "photos" / "a-folder.jpg").mkdir(parents=True, exist_ok=True)
    template = Photo(image="photos/a-folder.jpg")
    captioned_rows(template, np.abs(np.random.default_rng(3).normal(size=(12, 1280))).astype(np.float32))
    with pytest.raises(CommandError, match="Too few readable held-out images"):
        train("--min-images", "12", "--holdout", "0.25", "--epochs", "1", "--dry-run")


def test_held_out_images_an_object_store_refuses_are_left_out_not_a_traceback(
    bridge_dir, make_photo, sample_paths, monkeypatch
):
    """A storage other than the filesystem raises its own kinds for a lost or forbidden file
    (botocore's ClientError on a 404 or 403), not an OSError: the command ended in its traceback,
    after the whole training, where the pipeline marks such a row and goes on."""
    from django.core.files.storage import FileSystemStorage

    class StorageError(Exception):
        pass

    def refused(self, name):
        raise StorageError(f"403 Forbidden: {name}")

    template = make_photo(sample_paths["coffee"])
    captioned_rows(template, np.abs(np.random.default_rng(3).normal(size=(12, 1280))).astype(np.float32))
    monkeypatch.setattr(FileSystemStorage, "size", refused)
    with pytest.raises(CommandError, match="Too few readable held-out images"):
        train("--min-images", "12", "--holdout", "0.25", "--epochs", "1", "--dry-run")


def test_blank_lines_are_no_descriptions():
    """Zero-width characters alone (a byte order mark left by an import) are blank, as in search
    words and the fused alt text: such a line was a training pair of the image and nothing."""
    assert descriptions(["A red bus\n\u200b\n \n", "\ufeff", " two dogs "]) == ["A red bus", "two dogs"]


def test_descriptions_are_the_words_the_images_vectors_read():
    """A rich text field's markup (``<p data-block-key=...>``) and zero-width characters inside words
    were trained on as they stood, though the images' own vectors read only the words (``words_of``):
    the bridge learned from text no search or stored vector ever holds."""
    html = '<p data-block-key="a1b2c">A red <b>bike</b></p>\n<p data-block-key="d3e4f">by a wall</p>'
    assert descriptions([html, "a cat\u200bon a mat\nsecond line"]) == [
        "A red bike by a wall",
        "a cat on a mat",
        "second line",
    ]


def captioned_rows(template: Photo, vectors: np.ndarray) -> None:
    """One embedded row a vector, captioned "caption <i>", with this CNN's identity, on ``template``'s file."""
    identity = f"{get_encoder().image_identity}:12345678"
    Photo.objects.bulk_create(
        Photo(
            image=template.image.name,
            alt_text=f"caption {i}",
            embedding_status="embedded",
            embedding_visual=vector,
            embedding_encoder=identity,
        )
        for i, vector in enumerate(vectors)
    )


def test_a_training_that_diverges_is_a_command_error_not_a_nan_bridge(bridge_dir, make_photo, sample_paths):
    """A learning rate within float32 that still blows the weights up to NaN: the NaN candidate was
    scored, and the ranking of NaN scores ended the command with numpy's "high <= 0" traceback."""
    template = make_photo(sample_paths["coffee"])
    vectors = np.abs(np.random.default_rng(3).normal(size=(6, 1280))).astype(np.float32)
    captioned_rows(template, vectors)
    with pytest.raises(CommandError, match="diverged .* learning rate 1e[+]38"):
        train("--min-images", "6", "--holdout", "0.34", "--learning-rate", "1e38", "--dry-run")
    assert BridgeStore(bridge_dir).current_info() is None


def test_a_bridge_dir_that_cannot_be_made_is_refused_before_training():
    """The folder was first made when installing, after the whole training: an OSError traceback.
    (/proc: reading a bridge there finds none, as in a folder not made yet; making it fails, even as root.)"""
    with override_settings(SEMANTIC_IMAGES={"BRIDGE_DIR": "/proc/semantic-images-bridges"}):
        registry.reset()
        with pytest.raises(CommandError, match="BRIDGE_DIR.*/proc/semantic-images-bridges"):
            call_command("semantic_images_train_bridge", "--model", "photos.Photo", stdout=io.StringIO())
    registry.reset()


def test_too_few_captioned_images_is_a_clear_error(bridge_dir, make_photo, sample_paths):
    photo = make_photo(sample_paths["chelsea"], alt_text="a cat")
    embed_instances([photo])
    with pytest.raises(CommandError, match="at least 50"):
        call_command("semantic_images_train_bridge", "--model", "photos.Photo", stdout=io.StringIO())


def test_rows_embedded_by_another_cnn_are_not_trained_on(bridge_dir, make_photo, sample_paths):
    """Rows not yet re-embedded after a change of CNN (or flip) hold another network's features: a
    bridge recorded as this CNN's must not learn from them (they used to be collected all the same)."""
    from django_semantic_images.training import collect_captioned

    template = make_photo(sample_paths["coffee"])
    vectors = np.random.default_rng(3).normal(size=(30, 1280)).astype(np.float32)
    lite0 = get_encoder().image_identity
    Photo.objects.bulk_create(
        Photo(
            image=template.image.name,
            alt_text=f"caption {i}",
            embedding_status="embedded",
            embedding_visual=vectors[i],
            embedding_encoder=f"{lite0}:12345678" if i < 5 else "conse-lite1-minilm:12345678",
        )
        for i in range(30)
    )
    assert len(collect_captioned(Photo.objects.all())) == 30
    assert len(collect_captioned(Photo.objects.all(), image_identity=lite0)) == 5
    assert len(collect_captioned(Photo.objects.all(), image_identity=f"{lite0}-flip")) == 0
    with pytest.raises(CommandError, match=f"Only 5 images embedded by {lite0} have words"):
        train("--epochs", "1", "--dry-run")


def test_a_held_out_split_that_leaves_no_images_to_train_on_is_refused(bridge_dir, make_photo, sample_paths):
    """``--holdout 0.9`` of 3 images held out all 3: the bridge "trained" on none (no step taken,
    the map its random start) and was compared, then possibly installed, as if it had learned."""
    from django_semantic_images.training import TrainingOptions, fit_linear_bridge

    template = make_photo(sample_paths["coffee"])
    vectors = np.random.default_rng(3).normal(size=(3, 1280)).astype(np.float32)
    captioned_rows(template, vectors)
    with pytest.raises(CommandError, match="Holding out 3 of 3 images leaves 0 to train on"):
        train("--min-images", "3", "--holdout", "0.9", "--dry-run")
    # One image's descriptions, or batches of one: no batch contrasts two images, no step is taken.
    one_image = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="at least 2 images"):
        fit_linear_bridge(vectors, vectors[:, :4], one_image, TrainingOptions(epochs=1))
    with pytest.raises(ValueError, match="batch size 1"):
        fit_linear_bridge(vectors, vectors[:, :4], np.arange(3), TrainingOptions(epochs=1, batch_size=1))


@pytest.mark.parametrize("temperature", [0.05, 1e-5])
def test_other_descriptions_of_the_same_image_stay_masked_at_any_temperature(temperature):
    """They were masked with -1e4: at a temperature of 1e-5 and projections still pointing away from
    their descriptions (cosines under -0.1), every real logit lay below it and the masked pairs took the
    softmax: a loss 14 times the true one, and gradients toward the pairs meant to be left out."""
    import torch
    from torch.nn import functional as F

    from django_semantic_images.training import caption_infonce

    gen = torch.Generator().manual_seed(0)
    owners = torch.tensor([0, 0, 1, 2])  # two descriptions of image 0
    base = torch.zeros(4, 8)
    base[:, 0] = 1
    z = F.normalize(base + 0.1 * torch.randn(4, 8, generator=gen), dim=-1)[owners]
    y = F.normalize(-base + 0.1 * torch.randn(4, 8, generator=gen), dim=-1)
    logits = (z @ y.T).double() / temperature
    masked = (owners[:, None] == owners[None, :]) & ~torch.eye(4, dtype=torch.bool)

    def loss_without_masked(rows: torch.Tensor, out: torch.Tensor) -> float:
        """Cross-entropy of each row over the pairs that are not masked (float64), its own pair the answer."""
        return float(np.mean([-torch.log_softmax(rows[i][~out[i]], 0)[int((~out[i][:i]).sum())] for i in range(4)]))

    expected = (loss_without_masked(logits, masked) + loss_without_masked(logits.T, masked.T)) / 2
    assert float(caption_infonce(z, y, owners, temperature)) == pytest.approx(expected, rel=1e-4)


def test_bridge_file_round_trip_and_version(tmp_path):
    rng = np.random.default_rng(0)
    bridge = LearnedBridge(rng.normal(size=(1280, 384)).astype(np.float32), np.zeros(384, np.float32), 0.3)
    store = BridgeStore(tmp_path)
    path = store.install(bridge, metrics={"r5": 1.0})
    loaded = store.current()
    assert path.name == f"bridge-{bridge.version}.npz"
    assert loaded.version == bridge.version and loaded.conse_weight == pytest.approx(0.3)
    other = LearnedBridge(bridge.weight * 2, bridge.bias, 0.3)
    assert other.version != bridge.version
    # What changes the vectors changes the version: the same weights read through another transform,
    # or normalised in other pieces, shared it, and vectors of one passed as current under the other.
    read_otherwise = [
        LearnedBridge(bridge.weight, bridge.bias, 0.3, meta={"visual_transform": "sqrt"}),
        LearnedBridge(bridge.weight, bridge.bias, 0.3, meta={"parts": [128, 256]}),
        LearnedBridge(bridge.weight, bridge.bias, 0.3, meta={"parts": [256, 128]}),
    ]
    versions = {bridge.version} | {b.version for b in read_otherwise}
    assert len(versions) == 4
    # A bridge without them (all before they existed) keeps its version, whatever else its metadata says.
    legacy = hashlib.sha1(bridge.weight.tobytes() + bridge.bias.tobytes() + b"0.3000").hexdigest()[:10]
    same = LearnedBridge(bridge.weight, bridge.bias, 0.3, meta={"visual_transform": "", "epochs": 9, "cnn": "lite0"})
    assert bridge.version == same.version == legacy
    out = loaded.apply(rng.normal(size=(4, 1280)), rng.normal(size=(4, 384)))
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    store.uninstall()
    assert store.current() is None and store.versions() == [bridge.version]


def test_a_corrupt_bridge_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bridge.npz"
    bad.write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="not a readable bridge file"):
        LearnedBridge.load(bad)


@pytest.mark.parametrize("pointer", ['{"version": "abc123"}', '["bridge-abc123.npz"]', '"abc123"', '{"file": 7}'])
def test_a_pointer_that_names_no_bridge_file_is_a_clear_error_not_a_broken_encoder(tmp_path, pointer):
    """A current.json written by hand (a rollback to a version) or by another tool: valid JSON without
    ``file`` raised a KeyError (or TypeError) building the encoder, so every search failed too."""
    store = BridgeStore(tmp_path)
    store.pointer.write_text(pointer)
    with pytest.raises(ValueError, match="not a readable bridge pointer"):
        store.current()
    assert store.current_version() == "unreadable"
    with override_settings(SEMANTIC_IMAGES={"BRIDGE_DIR": str(tmp_path)}):
        encoder = ConSEEncoder(device="cpu")  # searches need no bridge: the encoder is built
    assert encoder.bridge is None and "current.json" in encoder.bridge_error


def test_collecting_training_data_reads_in_chunks_and_gives_the_same_data(make_photo, sample_paths):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_semantic_images.encoders.base import l2_normalize
    from django_semantic_images.training import collect_captioned

    template = make_photo(sample_paths["coffee"])  # pending: not collected
    vectors = np.random.default_rng(1).normal(size=(25, 1280)).astype(np.float32)
    Photo.objects.bulk_create(
        Photo(
            image=template.image.name,
            title=f"photo {i}" if i % 2 else "",
            alt_text=f"first line {i}\n\nsecond line {i}" if i % 3 else "",
            embedding_status="embedded",
            embedding_visual=vectors[i],
        )
        for i in range(25)
    )
    rows = list(Photo.objects.exclude(pk=template.pk).order_by("pk"))
    captioned = [(i, r) for i, r in enumerate(rows) if r.title or r.alt_text]
    expected_texts = [line for _, r in captioned for line in (r.title, *r.alt_text.splitlines()) if line.strip()]

    with CaptureQueriesContext(connection) as queries:
        data = collect_captioned(Photo.objects.all(), chunk_size=10)
    reads = [q["sql"] for q in queries.captured_queries if "photos_photo" in q["sql"]]
    assert len(reads) == 1 + 3  # the count, then 10 + 10 + 5 rows
    assert data.keys == [r.pk for _, r in captioned]
    assert data.texts == expected_texts
    np.testing.assert_allclose(data.visual, l2_normalize(vectors[[i for i, _ in captioned]]), atol=1e-6)
    counts = [len([t for t in (r.title, *r.alt_text.splitlines()) if t.strip()]) for _, r in captioned]
    assert data.owner.tolist() == [k for k, n in enumerate(counts) for _ in range(n)]
    whole = collect_captioned(Photo.objects.all(), chunk_size=1000)
    assert whole.keys == data.keys and whole.texts == data.texts and whole.owner.tolist() == data.owner.tolist()
    np.testing.assert_array_equal(whole.visual, data.visual)


def test_training_reads_the_words_the_vectors_read_properties_and_choice_labels(make_photo, sample_paths, monkeypatch):
    """A property among the text fields (which the field takes) was a FieldError out of
    ``values_list``, ending `semantic_images_train_bridge`; a field with choices gave its stored key
    ("ls"), no word about the picture. Both now read as the stored vectors read them."""
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.training import collect_captioned

    field = get_embedding_field(Photo)
    monkeypatch.setattr(field, "text_fields", ("title", "caption_words"))
    monkeypatch.setattr(Photo, "caption_words", property(lambda self: f"{self.alt_text} indoors"), raising=False)
    monkeypatch.setattr(Photo._meta.get_field("title"), "choices", [("ls", "A landscape"), ("pt", "A portrait")])
    template = make_photo(sample_paths["coffee"])  # pending: not collected
    vectors = np.random.default_rng(2).normal(size=(3, 1280)).astype(np.float32)
    Photo.objects.bulk_create(
        Photo(
            image=template.image.name,
            title=title,
            alt_text=f"caption {i}",
            embedding_status="embedded",
            embedding_visual=vectors[i],
        )
        for i, title in enumerate(("ls", "pt", ""))
    )
    data = collect_captioned(Photo.objects.all(), chunk_size=2)
    assert data.texts == ["A landscape", "caption 0 indoors", "A portrait", "caption 1 indoors", "caption 2 indoors"]
    rows = Photo.objects.exclude(pk=template.pk).order_by("pk")
    assert [field.texts(row) for row in rows] == [
        ["A landscape", "caption 0 indoors"],
        ["A portrait", "caption 1 indoors"],
        ["caption 2 indoors"],
    ]


def test_an_in_place_split_gives_the_same_parts_as_a_copying_one():
    from django_semantic_images.training import CaptionedImages, split_holdout

    rng = np.random.default_rng(2)
    owner = np.repeat(np.arange(50), rng.integers(1, 4, size=50))

    def data() -> CaptionedImages:
        visual = np.random.default_rng(3).normal(size=(50, 6)).astype(np.float32)
        return CaptionedImages(list(range(100, 150)), visual, [f"t{i}" for i in range(len(owner))], owner.copy())

    copied_train, copied_held = split_holdout(data(), 0.3, seed=1, max_held=7)
    source = data()
    train, held = split_holdout(source, 0.3, seed=1, max_held=7, in_place=True)
    assert train is source and len(held) == 7 and len(train) == 43
    for a, b in ((train, copied_train), (held, copied_held)):
        assert a.keys == b.keys and a.texts == b.texts and a.owner.tolist() == b.owner.tolist()
        np.testing.assert_array_equal(a.visual, b.visual)


def test_at_least_two_images_are_held_out_as_the_check_needs():
    """A held-out fraction that rounds to one image (0.1 of 12) held out one: the check needs two,
    so every such training ended, after the whole training, in "Too few readable held-out images"."""
    from django_semantic_images.training import MIN_HELD_OUT, CaptionedImages, split_holdout

    def data(n: int) -> CaptionedImages:
        visual = np.random.default_rng(3).normal(size=(n, 6)).astype(np.float32)
        return CaptionedImages(list(range(n)), visual, [f"t{i}" for i in range(n)], np.arange(n))

    assert MIN_HELD_OUT == 2
    train_part, held = split_holdout(data(12), 0.1)
    assert (len(train_part), len(held)) == (10, 2)
    assert len(split_holdout(data(12), 0.5, max_held=1)[1]) == 2
    with pytest.raises(ValueError, match="Holding out 2 of 3 images leaves 1 to train on"):
        split_holdout(data(3), 0.1)
    with pytest.raises(ValueError, match="Holding out 1 of 1 images leaves 0 to train on"):
        split_holdout(data(1), 0.1)  # not "2 of 1"


def test_a_small_held_out_fraction_still_checks_the_bridge(bridge_dir, make_photo, sample_paths):
    template = make_photo(sample_paths["coffee"])
    captioned_rows(template, np.abs(np.random.default_rng(3).normal(size=(12, 1280))).astype(np.float32))
    try:
        out = train("--min-images", "12", "--holdout", "0.1", "--epochs", "1", "--dry-run")
    except CommandError as exc:  # a worse bridge is refused: that is a check made, not skipped
        assert str(exc).startswith("Refused:"), exc
    else:
        assert "held out (2 images" in out and "Dry run" in out


def test_an_ensemble_is_the_mean_of_its_members_and_sqrt_trains_on_square_roots():
    from dataclasses import replace

    from django_semantic_images.encoders.bridges import transform_visual
    from django_semantic_images.training import TrainingOptions, fit_linear_bridge

    rng = np.random.default_rng(0)
    visual = rng.random((12, 16)).astype(np.float32)
    texts = rng.normal(size=(24, 8)).astype(np.float32)
    owner = np.repeat(np.arange(12), 2)
    opts = TrainingOptions(epochs=2, batch_size=8, seed=5)
    members = [fit_linear_bridge(visual, texts, owner, replace(opts, seed=s)) for s in (5, 6, 7)]
    weight, bias = fit_linear_bridge(visual, texts, owner, replace(opts, ensemble=3))
    assert np.allclose(weight, np.mean([m[0] for m in members], axis=0), atol=1e-6)
    assert np.allclose(bias, np.mean([m[1] for m in members], axis=0), atol=1e-6)
    assert not np.allclose(weight, members[0][0])

    roots = transform_visual(visual, "sqrt")
    assert np.allclose(
        fit_linear_bridge(visual, texts, owner, replace(opts, visual_transform="sqrt"))[0],
        fit_linear_bridge(roots, texts, owner, opts)[0],
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="Unknown visual transform"):
        transform_visual(visual, "cube")


def test_a_sqrt_bridge_keeps_its_transform_in_the_file(tmp_path):
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    bridge = LearnedBridge(weight, bias, 0.2, meta={"visual_transform": "sqrt"})
    loaded = LearnedBridge.load(bridge.save(tmp_path / "b.npz"))
    visual = rng.random((3, 16)).astype(np.float32) * 7  # stored vectors are normalised; the scale must not matter
    roots = np.sqrt(visual / np.linalg.norm(visual, axis=1, keepdims=True))
    expected = roots / np.linalg.norm(roots, axis=1, keepdims=True) @ weight + bias
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert loaded.visual_transform == "sqrt"
    assert np.allclose(loaded.project(visual), expected, atol=1e-5)
    assert not np.allclose(LearnedBridge(weight, bias, 0.2).project(visual), expected, atol=1e-3)


def test_the_command_trains_an_ensembled_sqrt_bridge(bridge_dir, captioned_site):
    from tests.conftest import Terminal

    err = Terminal()  # the bars go to the command's stderr (they went to sys.stderr), on a terminal only
    output = train("--epochs", "30", "--ensemble", "2", "--visual-transform", "sqrt", "--no-reembed", stderr=err)
    bridge = BridgeStore(bridge_dir).current()
    assert bridge is not None, output
    assert "training bridge: " in err.getvalue() and "/30 [" in err.getvalue(), err.getvalue()
    assert bridge.meta["ensemble"] == 2 and bridge.visual_transform == "sqrt"
    with pytest.raises(CommandError, match="--ensemble"):
        train("--ensemble", "0")


def random_bridge(seed: int, shape: tuple[int, int] = (1280, 384)) -> LearnedBridge:
    rng = np.random.default_rng(seed)
    return LearnedBridge(rng.normal(size=shape).astype(np.float32), np.zeros(shape[1], np.float32))


def test_an_unreadable_installed_bridge_stops_embedding_not_searching(bridge_dir, sample_photos, sample_paths):
    """A bridge file cut short (a copy that failed, a full disk): searches by words and by photo go
    on, storing vectors stops with an error naming the file (no vector is stored under an identity
    that is not the one that made it), the system check says so, and a good bridge installed later
    is picked up by the same encoder."""
    from django.core import checks

    store = BridgeStore(bridge_dir)
    path = store.install(random_bridge(1))
    path.write_bytes(path.read_bytes()[:500])
    registry.reset()  # a process starting now
    cat = sample_photos["chelsea"]
    assert Photo.objects.semantic_search("a cat").count() == len(sample_photos)
    assert Photo.objects.similar_to(sample_paths["chelsea"])[0] == cat
    before = Photo.objects.get(pk=cat.pk).embedding_encoder
    # Every row of the batch fails alone: the fault is the encoder's, retried as one that may pass
    # (the file may be put right), its reason naming the file.
    coffee = sample_photos["coffee"]
    with pytest.raises(TransientError, match=f"{path.name}.*not a readable bridge file") as raised:
        embed_instances([cat, coffee], force=True)
    assert isinstance(raised.value.__cause__, ValueError)
    assert Photo.objects.get(pk=cat.pk).embedding_encoder == before
    assert Photo.objects.get(pk=coffee.pk).embedding_encoder == coffee.embedding_encoder
    reported = checks.run_checks(databases=["default"])  # what `migrate` runs: it must not crash
    found = [m for m in reported if m.id == "semantic_images.E016"]
    assert len(found) == 1 and path.name in found[0].msg, [m.id for m in reported]

    good = random_bridge(2)
    store.install(good)
    assert get_encoder().identity.endswith(f"+bridge:{good.version}")
    assert not embed_instances([cat], force=True).failed
    assert Photo.objects.get(pk=cat.pk).embedding_encoder == get_encoder().identity


def test_installing_a_version_again_never_shows_a_half_written_file(tmp_path):
    """Two trainings at once on the same rows and seed make the same version: the second install
    rewrites the file the first one's pointer already names, while other processes read it. The
    file is written beside and renamed into place, so a reader sees the whole file or the old one."""
    import threading

    store = BridgeStore(tmp_path)
    bridge = random_bridge(4)
    store.install(bridge)
    errors: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                assert store.current().version == bridge.version
            except ValueError as exc:
                errors.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            store.install(bridge)
    finally:
        done.set()
        reader.join()
    assert not errors, errors[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", f"bridge-{bridge.version}.npz", "current.json"]


def test_a_bridge_installed_while_a_batch_is_mixed_never_labels_vectors_it_did_not_make(
    bridge_dir, make_photo, sample_paths
):
    """A worker mixes a batch with the bridge in use; a training installs another before the rows
    are written. The rows must not be stored under the new bridge's identity with the old bridge's
    vectors (they would never be stale, so never re-embedded): whatever identity they get, their
    vectors are the ones that identity makes. (The encoder below installs the new bridge right after
    mixing: the moment a concurrent install can land in.)"""
    from django_semantic_images.encoders.conse import ConSEEncoder

    store = BridgeStore(bridge_dir)
    store.install(random_bridge(5))
    later = random_bridge(6)

    class InstalledMeanwhile(ConSEEncoder):
        def mix(self, visual, logits):
            semantic = super().mix(visual, logits)
            if store.current_info()["version"] != later.version:
                store.install(later)
            return semantic

    photo = make_photo(sample_paths["rocket"], alt_text="a launch")
    embed_instances([photo], encoder=InstalledMeanwhile())
    photo.refresh_from_db()
    labelled, vector = photo.embedding_encoder, np.asarray(photo.embedding_semantic)
    registry.reset()
    embed_instances([photo], force=True)  # made again, by a process that read the new bridge
    photo.refresh_from_db()
    assert photo.embedding_encoder.endswith(f"+bridge:{later.version}")
    if labelled == photo.embedding_encoder:
        np.testing.assert_allclose(vector, np.asarray(photo.embedding_semantic), atol=1e-5)


def test_training_replaces_an_unreadable_installed_bridge(bridge_dir, captioned_site):
    """What E016 tells to do: a bridge file cut short is compared as ConSE alone, and the new
    bridge is installed and used for the re-embedding."""
    store = BridgeStore(bridge_dir)
    broken = store.install(random_bridge(7))
    broken.write_bytes(broken.read_bytes()[:500])
    output = train("--epochs", "30")
    assert "cannot be read" in output and "ConSE alone" in output, output
    version = store.current_info()["version"]
    assert set(Photo.objects.values_list("embedding_encoder", flat=True)) == {get_encoder().identity}
    assert get_encoder().identity.endswith(f"+bridge:{version}")


def test_a_bridge_another_training_installed_meanwhile_is_not_replaced_unchecked(
    bridge_dir, captioned_site, monkeypatch
):
    """Two trainings at once: each compares its candidate with the bridge in use when it checks.
    One that finishes second must not install over the first one's bridge, which it never compared
    with: it is refused, saying so, and the other bridge stays."""
    from django_semantic_images.management.commands import semantic_images_train_bridge as command

    store = BridgeStore(bridge_dir)
    other = random_bridge(8)
    compare = command.check_bridge

    def installed_meanwhile(*args, **kwargs):
        result = compare(*args, **kwargs)
        store.install(other)  # the other training finishes while this one checks its candidate
        return result

    monkeypatch.setattr(command, "check_bridge", installed_meanwhile)
    with pytest.raises(CommandError, match=f"{other.version} was installed meanwhile"):
        train("--epochs", "30")
    assert store.current_info()["version"] == other.version
    assert store.versions() == [other.version]


def test_a_bridge_installed_within_the_file_systems_time_resolution_is_picked_up(bridge_dir):
    """A file system with coarse timestamps (1 s on some network shares, FAT's 2 s) gives two installs
    close together the same pointer mtime: an encoder that read the first must still see the second,
    or it would embed with another bridge than the other processes, for good."""
    import os

    store = BridgeStore(bridge_dir)
    first, second = random_bridge(9), random_bridge(10)
    store.install(first)
    registry.reset()
    encoder = get_encoder()
    assert encoder.identity.endswith(f"+bridge:{first.version}")
    stamp = store.pointer.stat()
    store.install(second)
    os.utime(store.pointer, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the same tick as the first install
    assert encoder.identity.endswith(f"+bridge:{second.version}")


@pytest.mark.parametrize(
    "arrays",
    [
        {"weight": np.zeros((8, 4)), "bias": np.zeros(4), "conse_weight": np.zeros(2), "meta": np.array("{}")},
        {"weight": np.zeros((8, 4)), "bias": np.zeros(3), "conse_weight": np.float32(0.2), "meta": np.array("{}")},
        {"weight": np.zeros(8), "bias": np.zeros(8), "conse_weight": np.float32(0.2), "meta": np.array("{}")},
        {"weight": np.zeros((8, 4)), "bias": np.zeros(4), "conse_weight": np.float32(0.2), "meta": np.array("[")},
    ],
)
def test_a_bridge_file_whose_arrays_make_no_bridge_is_a_clear_error(tmp_path, arrays):
    """A zip that numpy reads, holding arrays of the wrong shapes: the same ValueError naming the
    file as for a file cut short (not a TypeError from float(), nor a bridge failing at embed time)."""
    bad = tmp_path / "bridge-odd.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="bridge-odd.npz is not a readable bridge file"):
        LearnedBridge.load(bad)


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"weight": np.full((8, 4), np.nan)}, "weight holds NaN"),
        ({"bias": np.array([0.0, np.inf, 0.0, 0.0])}, "bias holds NaN or infinite"),
        ({"weight": np.full((8, 4), 1e300)}, "beyond float32"),
        ({"weight": np.full((8, 4), "x")}, "weight holds <U1 values"),
        ({"bias": np.zeros(4, np.complex64)}, "bias holds complex64 values"),
        ({"conse_weight": np.float32(np.nan)}, "conse_weight nan"),
        ({"conse_weight": np.float32(5.0)}, "conse_weight 5.0"),
        ({"meta": np.array('{"visual_transform": "log"}')}, "unknown visual_transform 'log'"),
        ({"meta": np.array('{"parts": [3, 3]}')}, r"parts \(3, 3\) do not add up"),
        ({"meta": np.array('{"parts": "ab"}')}, "ValueError"),
        ({"meta": np.array("[1]")}, "metadata is list"),
    ],
)
def test_a_bridge_file_whose_values_make_no_bridge_is_a_clear_error(tmp_path, arrays, reason):
    """Arrays of the right shapes holding NaN, infinities or strings, a blend weight outside [0, 1], or
    metadata the bridge cannot follow: loaded and applied all the same, so every embedding failed
    (PostgreSQL refuses NaN in a vector; strings fail the product) or, with a blend weight of 5,
    stored vectors ranked backwards. Now the ValueError naming the file (system check E016)."""
    bad = tmp_path / "bridge-odd.npz"
    good = {"weight": np.zeros((8, 4)), "bias": np.zeros(4), "conse_weight": np.float32(0.2), "meta": np.array("{}")}
    np.savez(bad, **(good | arrays))
    with pytest.raises(ValueError, match=f"bridge-odd.npz is not a readable bridge file: .*{reason}"):
        LearnedBridge.load(bad)
    np.savez(bad, **good)
    assert LearnedBridge.load(bad).weight.shape == (8, 4)


def test_an_encoder_that_ignores_installed_bridges_is_refused_before_training(bridge_dir, settings, monkeypatch):
    """``ENCODER_OPTIONS["bridge"]`` None (ConSE alone) or a fixed file: a bridge installed in
    BRIDGE_DIR would not be used. Said before any row is read or anything trained, and nothing is
    installed (it used to train, install, then report the encoder does not use it)."""
    from django_semantic_images.management.commands import semantic_images_train_bridge as command

    def never(*args, **kwargs):
        raise AssertionError("rows were read for an encoder that ignores BRIDGE_DIR")

    monkeypatch.setattr(command, "collect_captioned", never)
    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(bridge_dir), "ENCODER_OPTIONS": {"bridge": None}}
    with pytest.raises(CommandError, match="bridge.*'auto'"):
        call_command("semantic_images_train_bridge", "--model", "photos.Photo", stdout=io.StringIO())
    assert BridgeStore(bridge_dir).current_info() is None


def test_a_dry_run_of_an_encoder_without_bridge_is_compared_with_what_it_uses(bridge_dir, captioned_site, settings):
    """``ENCODER_OPTIONS["bridge"]`` None: the vectors in use are ConSE alone, but a dry run compared
    the candidate with the bridge installed in BRIDGE_DIR, which this encoder does not use."""
    encoder = get_encoder()
    rng = np.random.default_rng(0)
    meta = {"cnn": encoder.network.name, "text_models": list(encoder.text_identities)}
    weight = rng.normal(size=(encoder.visual_dimensions, encoder.semantic_dimensions)).astype(np.float32)
    other = LearnedBridge(weight, np.zeros(encoder.semantic_dimensions, np.float32), meta=meta)
    BridgeStore(bridge_dir).install(other)
    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(bridge_dir), "ENCODER_OPTIONS": {"bridge": None}}
    registry.reset()
    try:
        said = train("--epochs", "1", "--dry-run")
    except CommandError as exc:  # refused: the message names what it was compared with
        said = str(exc)
    assert "ConSE alone" in said and other.version not in said, said
    assert BridgeStore(bridge_dir).current_info()["version"] == other.version


def test_the_reembedding_after_an_install_covers_the_rows_a_default_manager_hides(draft_model):
    """The rows re-embedded with a new bridge were read through the default manager: the rows it hides
    (unpublished drafts) kept the old bridge's vectors, though the command says it re-embeds every row."""
    from django_semantic_images.management.commands.semantic_images_train_bridge import Command

    Draft = draft_model
    Draft._base_manager.bulk_create(
        [Draft(image="drafts/a.jpg"), Draft(image="drafts/b.jpg", published=True), Draft(image="drafts/c.jpg")]
    )
    read = [row.pk for chunk in Command.chunks(Draft, 2) for row in chunk]
    assert read == sorted(Draft._base_manager.values_list("pk", flat=True))


def test_ctrl_c_says_whether_the_bridge_was_installed_and_what_to_run(bridge_dir, captioned_site, monkeypatch):
    """Ctrl-C ended the training in KeyboardInterrupt's traceback, which said neither whether the bridge
    was installed nor, when it was, that the rows not re-embedded yet wait for a reindex."""
    from django_semantic_images.management.commands import semantic_images_train_bridge as command
    from tests.conftest import ctrl_c_as_in_a_terminal, press_ctrl_c

    store = BridgeStore(bridge_dir)

    def interrupted(real):
        def call(*args, **kwargs):
            press_ctrl_c()
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(command, "collect_captioned", interrupted(command.collect_captioned))
    with ctrl_c_as_in_a_terminal(), pytest.raises(CommandError, match="Interrupted: nothing was installed") as stop:
        train()
    assert stop.value.returncode == 130 and store.current() is None
    monkeypatch.undo()

    monkeypatch.setattr(command, "embed_instances", interrupted(command.embed_instances))
    with (
        ctrl_c_as_in_a_terminal(),
        pytest.raises(CommandError, match=r"Interrupted while re-embedding.*semantic_images_reindex --stale") as stop,
    ):
        train("--epochs", "30")
    version = store.current_info()["version"]
    assert stop.value.returncode == 130 and version in str(stop.value)
    assert not Photo.objects.filter(embedding_encoder__endswith=version).exists()


def test_a_database_failure_while_re_embedding_says_the_bridge_is_installed(bridge_dir, captioned_site, monkeypatch):
    """The connection lost after the install (a failover, a restart): the command said only "The
    database failed", not that the new bridge was in use and the rows not re-embedded yet wait for
    a reindex, as it says after Ctrl-C."""
    from django.db import OperationalError

    from django_semantic_images.management.commands import semantic_images_train_bridge as command

    def lost(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(command, "embed_instances", lost)
    with pytest.raises(CommandError, match=r"database failed while re-embedding.*reindex --stale") as stop:
        train("--epochs", "30")
    version = BridgeStore(bridge_dir).current_info()["version"]
    assert version in str(stop.value) and "server closed the connection unexpectedly" in str(stop.value)


def test_a_fault_that_may_pass_while_re_embedding_says_the_bridge_is_installed(bridge_dir, captioned_site):
    """A fault that may pass after the install (here every row's new vectors refused, as by a trigger;
    the storage gone) ended the command in the pipeline's ``TransientError`` traceback, which said neither
    that the new bridge was in use nor that the rows not re-embedded yet wait for a reindex, as it
    says after a database failure."""
    from django.db import connection

    table = connection.ops.quote_name(Photo._meta.db_table)
    with connection.cursor() as cursor:  # NOT VALID: only the rows written from now on are checked
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction: no trigger events pending
        cursor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT refuses_bridge CHECK (embedding_encoder NOT LIKE '%%+bridge:%%') "
            "NOT VALID"
        )
    with pytest.raises(
        CommandError, match=r"Re-embedding stopped \(Every row of the batch failed: IntegrityError"
    ) as stop:
        train("--epochs", "30")
    version = BridgeStore(bridge_dir).current_info()["version"]
    assert f"bridge {version} is installed and in use" in str(stop.value)
    assert "semantic_images_reindex --stale" in str(stop.value)
    assert not Photo.objects.filter(embedding_encoder__endswith=version).exists()


def test_ctrl_c_just_after_the_pointer_is_written_says_the_bridge_is_installed(bridge_dir, captioned_site, monkeypatch):
    """Ctrl-C once ``current.json`` named the new bridge, before the install returned (the lock
    still being released): the command said "nothing was installed", while the bridge was in use
    and no row had been re-embedded with it."""
    from tests.conftest import ctrl_c_as_in_a_terminal, press_ctrl_c

    real = BridgeStore._write_pointer

    def written_then_interrupted(self, info):
        real(self, info)
        press_ctrl_c()

    monkeypatch.setattr(BridgeStore, "_write_pointer", written_then_interrupted)
    with ctrl_c_as_in_a_terminal(), pytest.raises(CommandError, match="Interrupted") as stop:
        train("--epochs", "30")
    version = BridgeStore(bridge_dir).current_info()["version"]
    assert stop.value.returncode == 130 and "nothing was installed" not in str(stop.value)
    assert version in str(stop.value) and "semantic_images_reindex --stale" in str(stop.value)
