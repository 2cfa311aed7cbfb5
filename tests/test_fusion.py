"""The fusion rule: an editor's words count, and images without words are not crowded out."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from django_semantic_images.encoders import get_encoder
from django_semantic_images.fusion import fuse, specific_part

WORDS = {
    "astronaut": "Portrait of an astronaut in her spacesuit",
    "camera": "A man with a camera on a tripod",
    "china": "An old temple in China",
    "hubble_deep_field": "Galaxies in deep space",
    "coins": "A collection of old coins",
    "retina": "A photograph of an eye",
    "chelsea": "A cat lying on a blanket",
    "coffee": "A cup of coffee on a saucer",
    "rocket": "A rocket on the launch pad",
    "horse": "A horse",
    "motorcycle_left": "A red motorcycle",
    "flower": "A pink flower",
}
WITH_WORDS = ["astronaut", "camera", "china", "hubble_deep_field", "coins", "retina"]


def test_weights_at_the_ends_and_unit_length():
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(3, 384)), rng.normal(size=(3, 384))
    unit = image / np.linalg.norm(image, axis=1, keepdims=True)
    np.testing.assert_allclose(fuse(image, text, 0.0), unit, atol=1e-6)
    np.testing.assert_allclose(fuse(image, text, 1.0), text / np.linalg.norm(text, axis=1, keepdims=True), atol=1e-6)
    common = rng.normal(size=384) * 0.1
    np.testing.assert_allclose(fuse(image, text, 1.0, common=common), specific_part(text, common), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fuse(image, text, 0.5, common=common), axis=1), 1.0, atol=1e-6)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="within"):
        fuse(np.ones((1, 4)), np.ones((1, 4)), 1.5)
    with pytest.raises(ValueError, match="Cannot fuse"):
        fuse(np.ones((2, 4)), np.ones((1, 4)), 0.5)


@pytest.fixture(scope="module")
def gallery(sample_paths):
    encoder = get_encoder()
    names = sorted(WORDS)
    semantic = encoder.encode_images([Image.open(sample_paths[n]) for n in names]).semantic
    words = encoder.encode_texts([WORDS[n] for n in names])
    queries = encoder.encode_texts([f"a photo: {WORDS[n].lower()}" for n in names])
    return encoder, names, semantic, words, queries


def scores(gallery, common):
    encoder, names, semantic, words, queries = gallery
    rows = semantic.copy()
    idx = [names.index(n) for n in WITH_WORDS]
    rows[idx] = fuse(rows[idx], words[idx], 0.5, common=common)
    return queries @ rows.T, idx, [i for i in range(len(names)) if i not in idx]


def wrong_scores(sc, with_words, without):
    """Mean score of the wrong rows with words and without, for queries about rows without words."""
    alt = np.mean([sc[q, with_words].mean() for q in without])
    plain = np.mean([np.mean([sc[q, j] for j in without if j != q]) for q in without])
    return alt, plain


def test_words_find_their_image_and_do_not_crowd_out_images_without_words(gallery):
    encoder = gallery[0]
    sc, with_words, without = scores(gallery, encoder.common_text_direction)
    ranks = [1 + int(np.sum(sc[q] > sc[q, q])) for q in range(len(sc))]
    assert all(ranks[q] == 1 for q in with_words), ranks
    assert all(ranks[q] <= 2 for q in without), ranks
    alt, plain = wrong_scores(sc, with_words, without)
    assert alt <= plain, (alt, plain)


def test_a_plain_mix_favours_any_image_with_words(gallery):
    """The problem the rule solves: without removing the common direction, words win by being words."""
    sc, with_words, without = scores(gallery, None)
    alt, plain = wrong_scores(sc, with_words, without)
    assert alt > plain + 0.05, (alt, plain)


@pytest.mark.django_db
def test_words_the_text_model_cannot_read_leave_the_picture_alone(make_photo, sample_paths):
    """The bundled MiniLM reads Latin script only: its vector of Chinese or Russian words is noise
    (a search in them is matched as keywords). Fused all the same, such alt text dropped the
    picture's own score for English words (a cup of coffee: 0.57 to 0.34), below every copy
    without words; a text it cannot read now counts for nothing, beside one it reads."""
    from django_semantic_images.pipeline import embed_instances
    from photos.models import Photo

    coffee = sample_paths["coffee"]
    rows = {
        "plain": make_photo(coffee),
        "chinese": make_photo(coffee, alt_text="一杯咖啡放在碟子上"),
        "title": make_photo(coffee, title="Coffee"),
        "title and russian": make_photo(coffee, title="Coffee", alt_text="Чашка кофе на блюдце"),
    }
    assert not embed_instances(list(rows.values())).failed
    vectors = dict(Photo.objects.filter(pk__in=[r.pk for r in rows.values()]).values_list("pk", "embedding_semantic"))
    vector = {name: np.asarray(vectors[row.pk]) for name, row in rows.items()}
    np.testing.assert_allclose(vector["chinese"], vector["plain"], atol=1e-6)
    np.testing.assert_allclose(vector["title and russian"], vector["title"], atol=1e-6)
    assert not np.allclose(vector["title"], vector["plain"], atol=1e-3)  # the words it reads still count


@pytest.mark.django_db
def test_html_markup_in_a_text_field_is_not_read_as_words(make_photo, sample_paths):
    """A rich text field (Wagtail's ``RichTextField``, an HTML editor's) holds markup: read as words,
    ``<p data-block-key="h4k2s">`` took most of what the words gave the picture (its score for "a cat
    lying on a blanket": 0.69 with the words alone, 0.47 with that markup around them). The text
    model now reads the words alone: tags dropped, entities read, as the words of plain text."""
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.pipeline import embed_instances
    from photos.models import Photo

    cat = sample_paths["chelsea"]
    rows = {
        "plain": make_photo(cat, alt_text="A cat lying on a blanket & a pillow. It sleeps"),
        "html": make_photo(
            cat,
            alt_text='<p data-block-key="h4k2s">A cat lying on a <b>blanket</b> &amp; a pillow.</p><p>It sleeps</p>',
        ),
    }
    field = get_embedding_field(Photo)
    assert field.texts(rows["html"]) == ["A cat lying on a blanket & a pillow. It sleeps"]
    assert field.texts(make_photo(cat, alt_text="<p> </p>", title="Fewer than 5 <3")) == ["Fewer than 5 <3"]
    assert not embed_instances(list(rows.values())).failed
    vectors = dict(Photo.objects.filter(pk__in=[r.pk for r in rows.values()]).values_list("pk", "embedding_semantic"))
    np.testing.assert_allclose(np.asarray(vectors[rows["html"].pk]), np.asarray(vectors[rows["plain"].pk]), atol=1e-6)


def test_a_long_text_is_judged_by_the_beginning_the_model_reads():
    """Whether the text model reads an editor's text was judged on all of it: a long caption in
    English followed by a long quotation in Chinese counted for nothing (the model reads its English
    beginning only, at most ``MAX_LENGTH`` tokens), and every such text, however long, was kept in
    the model's ``reads()`` cache of search words."""
    from django_semantic_images.fusion import READS_PREFIX, fuse_texts

    encoder = get_encoder()
    text = "A cat lying on a blanket in the sun. " * 200 + "一只猫躺在毯子上。" * 2000
    semantic = np.random.default_rng(0).normal(size=(1, encoder.semantic_dimensions)).astype(np.float32)
    semantic /= np.linalg.norm(semantic)
    before = set(encoder.text_encoder()._read)  # the process's cache: other tests' search words too
    fused = fuse_texts(encoder, semantic, [[text]], 0.5)
    assert not np.allclose(fused, semantic, atol=1e-3)  # the words it reads count
    added = set(encoder.text_encoder()._read) - before
    assert added and max(map(len, added)) <= READS_PREFIX


@pytest.mark.django_db
def test_invisible_characters_in_a_text_field_separate_words_as_in_search_words(make_photo, sample_paths):
    """Search words read the zero-width characters (and NUL) as spaces; an editor's text (pasted from a
    web page or a word processor) kept them, and the tokenizer drops them, joining the words around
    them: "a cup\\u200bof coffee" was embedded as "a cupof coffee". They now separate words alike."""
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.pipeline import embed_instances
    from photos.models import Photo

    coffee = sample_paths["coffee"]
    rows = {
        "plain": make_photo(coffee, alt_text="A cup of coffee on a saucer"),
        "invisible": make_photo(coffee, alt_text="\ufeffA cup\u200bof coffee\u200b\u200bon a\u2060saucer\u200b"),
    }
    assert get_embedding_field(Photo).texts(rows["invisible"]) == ["A cup of coffee on a saucer"]
    # They are the blank characters of search words that are no whitespace to Python.
    from django_semantic_images.encoders.text import BLANK_RUN, INVISIBLE_RUN

    invisible = {chr(c) for c in range(0x10000) if BLANK_RUN.fullmatch(chr(c)) and not chr(c).isspace()}
    assert invisible == {chr(c) for c in range(0x10000) if INVISIBLE_RUN.fullmatch(chr(c))}
    assert not embed_instances(list(rows.values())).failed
    vectors = dict(Photo.objects.filter(pk__in=[r.pk for r in rows.values()]).values_list("pk", "embedding_semantic"))
    np.testing.assert_allclose(
        np.asarray(vectors[rows["invisible"].pk]), np.asarray(vectors[rows["plain"].pk]), atol=1e-6
    )
