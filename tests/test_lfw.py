"""The LFW loader (on fake LFW trees of JPEGs written here) and the CNN on non-square images."""

import shutil

import numpy as np
import pytest
from PIL import Image

from transferlab import datasets, models
from transferlab.datasets.lfw import download_lfw, load_lfw
from transferlab.errors import ConfigError, DataError
from transferlab.models.neural import CNN

#: person -> number of images in the fake tree
PEOPLE = {"Alice_Anders": 4, "Bob_Brown": 3, "Carol_Chen": 2, "Dan_Diaz": 1}


def write_tree(folder, people=PEOPLE, seed=0):
    """A fake LFW alignment folder: ``<Person>/<Person>_NNNN.jpg``, 250×250 RGB JPEGs (smooth, person-tinted)."""
    rng = np.random.default_rng(seed)
    for k, (person, n) in enumerate(people.items()):
        (folder / person).mkdir(parents=True)
        for i in range(1, n + 1):
            coarse = rng.integers(0, 256, size=(25, 25, 3)).astype(np.float64)
            coarse[..., k % 3] = 0.5 * coarse[..., k % 3] + 120
            image = Image.fromarray(coarse.astype(np.uint8)).resize((250, 250), Image.Resampling.BILINEAR)
            image.save(folder / person / f"{person}_{i:04d}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A data folder holding ``lfw-deepfunneled/`` (the layout of the official archive)."""
    root = tmp_path_factory.mktemp("lfwdata")
    write_tree(root / "lfw-deepfunneled")
    return root


@pytest.fixture(scope="module")
def pair(tree):
    return datasets.load("lfw", path=tree, people=("Alice_Anders", "Bob_Brown"))


def _layout(tmp_path, tree, layout):
    source = tree / "lfw-deepfunneled"
    targets = {"lfw": ("lfw", ""), "lfw_funneled": ("lfw_funneled", ""),
               "lfw-deepfunneled": ("lfw-deepfunneled", ""), "itself": ("lfw_funneled", "lfw_funneled"),
               "data_home": ("lfw_home/lfw_funneled", ""), "lfw_home": ("lfw_home/lfw_funneled", "lfw_home")}
    copy_to, path = targets[layout]
    shutil.copytree(source, tmp_path / copy_to)
    return tmp_path / path


# ---- layouts, shapes, values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["lfw", "lfw_funneled", "lfw-deepfunneled", "itself", "data_home", "lfw_home"])
def test_every_layout_gives_the_same_data(tmp_path, tree, pair, layout):
    data = datasets.load("lfw", path=_layout(tmp_path, tree, layout), people=("Alice_Anders", "Bob_Brown"))
    assert np.array_equal(data.X, pair.X) and np.array_equal(data.y, pair.y)
    assert data.row_names == pair.row_names


def test_shapes_values_and_metadata(pair):
    assert pair.X.shape == (7, 62 * 47) and pair.image_shape == (62, 47)
    assert pair.X.dtype == np.float64 and pair.X.min() >= 0 and pair.X.max() <= 1 and pair.X.std() > 0.01
    assert pair.name == "lfw" and pair.classes == ["Alice_Anders", "Bob_Brown"]
    assert "Alice_Anders (class 0, 4 images) vs Bob_Brown (class 1, 3 images)" in pair.description
    assert "62×47" in pair.description and "\n" not in pair.description


@pytest.mark.parametrize("options, shape", [({"resize": 0.4}, (50, 37)), ({"resize": None}, (125, 94)),
                                            ({"crop": None, "resize": 0.2}, (50, 50)),
                                            ({"crop": (10, 110, 20, 100), "resize": 1.0}, (100, 80)),
                                            ({"crop": [10, 110, 20, 100], "resize": 0.25}, (25, 20))])
def test_resize_and_crop_options(tree, options, shape):
    data = datasets.load("lfw", path=tree, people=("Carol_Chen", "Bob_Brown"), **options)
    assert data.image_shape == shape and data.X.shape == (5, shape[0] * shape[1])
    assert data.X.min() >= 0 and data.X.max() <= 1


def test_crop_also_takes_scikit_learns_slices(tree, pair):
    sliced = datasets.load("lfw", path=tree, people=("Alice_Anders", "Bob_Brown"),
                           crop=(slice(70, 195), slice(78, 172)))
    assert np.array_equal(sliced.X, pair.X)


def test_one_face_equals_an_independent_computation(tree, pair):
    """Crop rows 70:195 and columns 78:172 of the decoded RGB image, bicubic resize to 47×62 (w×h), /255, mean of
    the channels (scikit-learn's order of operations, in float32)."""
    row = pair.row_names.index("Bob_Brown/Bob_Brown_0002.jpg")
    with Image.open(tree / "lfw-deepfunneled" / pair.row_names[row]) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.shape == (250, 250, 3)
    small = Image.fromarray(rgb[70:195, 78:172]).resize((47, 62), Image.Resampling.BICUBIC)
    grey32 = (np.asarray(small, dtype=np.float32) / np.float32(255)).mean(axis=2)
    assert np.array_equal(pair.X[row].reshape(62, 47), grey32.astype(np.float64))
    grey64 = np.asarray(small, dtype=np.float64).mean(axis=2) / 255
    np.testing.assert_allclose(pair.X[row].reshape(62, 47), grey64, atol=1e-6)


def test_faces_equal_scikit_learns(tree, pair):
    lfw = pytest.importorskip("sklearn.datasets._lfw")
    if not hasattr(lfw, "_load_imgs"):
        pytest.skip("this scikit-learn has no _load_imgs")
    files = [str(tree / "lfw-deepfunneled" / r) for r in pair.row_names]
    for resize in (0.5, 0.4):
        faces = lfw._load_imgs(files, (slice(70, 195), slice(78, 172)), False, resize)
        ours = load_lfw(tree, ("Alice_Anders", "Bob_Brown"), resize=resize)
        assert np.array_equal(ours.X, faces.reshape(len(files), -1).astype(np.float64))


# ---- tasks -----------------------------------------------------------------------------------------------------
def test_two_people_rows_and_labels(pair):
    assert pair.row_names == sorted(pair.row_names)
    assert pair.row_names[0] == "Alice_Anders/Alice_Anders_0001.jpg"
    assert pair.row_names[-1] == "Bob_Brown/Bob_Brown_0003.jpg"
    for name, label in zip(pair.row_names, pair.y):
        person, file = name.split("/")
        assert file.startswith(person + "_") and file.endswith(".jpg")
        assert label == pair.classes.index(person)
    assert np.bincount(pair.y).tolist() == [4, 3]


def test_order_of_people_sets_the_classes(tree, pair):
    swapped = datasets.load("lfw", path=tree, people=("Bob_Brown", "Alice_Anders"))
    assert swapped.classes == ["Bob_Brown", "Alice_Anders"]
    assert swapped.row_names == pair.row_names and np.array_equal(swapped.y, 1 - pair.y)
    assert np.array_equal(swapped.X, pair.X)


def test_one_versus_rest_with_min_faces(tree):
    data = datasets.load("lfw", path=tree, people=("Bob_Brown",), min_faces=2)
    assert data.classes == ["other", "Bob_Brown"]
    people = {r.split("/")[0] for r in data.row_names}
    assert people == {"Alice_Anders", "Bob_Brown", "Carol_Chen"}  # Dan_Diaz has 1 image < 2
    assert np.bincount(data.y).tolist() == [6, 3]
    assert all((p.startswith("Bob_Brown/")) == bool(label) for p, label in zip(data.row_names, data.y))
    assert "2 other people with at least 2 images" in data.description
    everyone = datasets.load("lfw", path=tree, people="Bob_Brown")  # one name as a string; default: everyone
    assert len(everyone) == sum(PEOPLE.values()) and np.bincount(everyone.y).tolist() == [7, 3]
    assert datasets.load("lfw", path=tree, people=("Bob_Brown",), min_faces=3).row_names == [
        *(f"Alice_Anders/Alice_Anders_{i:04d}.jpg" for i in range(1, 5)),
        *(f"Bob_Brown/Bob_Brown_{i:04d}.jpg" for i in range(1, 4))]


def test_min_faces_with_two_people(tree):
    assert len(datasets.load("lfw", path=tree, people=("Alice_Anders", "Bob_Brown"), min_faces=3)) == 7
    with pytest.raises(DataError, match="Bob_Brown has 3 images.*fewer than min_faces=4"):
        datasets.load("lfw", path=tree, people=("Alice_Anders", "Bob_Brown"), min_faces=4)


def test_loading_is_deterministic(tree, pair, tmp_path):
    again = datasets.load("lfw", path=tree, people=("Alice_Anders", "Bob_Brown"))
    assert np.array_equal(again.X, pair.X) and np.array_equal(again.y, pair.y) and again.row_names == pair.row_names
    # the same images written in another order give the same rows
    reverse = dict(reversed(list(PEOPLE.items())))
    write_tree(tmp_path / "lfw", {p: PEOPLE[p] for p in reverse}, seed=0)
    other = datasets.load("lfw", path=tmp_path, people=("Alice_Anders", "Bob_Brown"))
    assert other.row_names == pair.row_names


def test_only_the_images_needed_are_read(tmp_path, tree):
    shutil.copytree(tree / "lfw-deepfunneled", tmp_path / "lfw")
    (tmp_path / "lfw" / "Dan_Diaz" / "Dan_Diaz_0001.jpg").write_bytes(b"not a jpeg")
    assert len(datasets.load("lfw", path=tmp_path, people=("Alice_Anders", "Bob_Brown"))) == 7
    assert len(datasets.load("lfw", path=tmp_path, people=("Alice_Anders",), min_faces=2)) == 9
    with pytest.raises(DataError, match="Dan_Diaz_0001.jpg"):
        datasets.load("lfw", path=tmp_path, people=("Alice_Anders",))


def test_preferred_alignment_when_several(tmp_path, tree):
    shutil.copytree(tree / "lfw-deepfunneled", tmp_path / "lfw")
    write_tree(tmp_path / "lfw_funneled", {"Eve_Evans": 2, "Alice_Anders": 2}, seed=1)
    data = datasets.load("lfw", path=tmp_path, people=("Eve_Evans", "Alice_Anders"))
    assert len(data) == 4 and "lfw_funneled" in data.description
    assert len(datasets.load("lfw", path=tmp_path / "lfw", people=("Alice_Anders", "Bob_Brown"))) == 7


def test_registered(tree):
    assert "lfw" in datasets.DATASETS


# ---- bad input: one-line DataErrors ----------------------------------------------------------------------------
def _error(match, **options):
    with pytest.raises(DataError, match=match) as info:
        datasets.load("lfw", **options)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_folder(tmp_path):
    _error("LFW folder not found: .*missing.*lfw_funneled", path=tmp_path / "missing", people=("A", "B"))


def test_folder_without_person_folders(tmp_path):
    _error("holds no person folders", path=tmp_path, people=("A", "B"))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty_person").mkdir()
    _error("holds no person folders", path=tmp_path, people=("A", "B"))
    (tmp_path / "lfw_home").mkdir()
    (tmp_path / "lfw_home" / "lfw-funneled.tgz").write_bytes(b"")
    _error("lfw-funneled.tgz: extract it", path=tmp_path / "lfw_home", people=("A", "B"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_or_truncated_jpeg_is_named(tmp_path, tree, damage):
    shutil.copytree(tree / "lfw-deepfunneled", tmp_path / "lfw")
    bad = tmp_path / "lfw" / "Bob_Brown" / "Bob_Brown_0002.jpg"
    raw = bad.read_bytes()
    bad.write_bytes({"garbage": b"\xff\xd8 this is no jpeg" * 10, "truncated": raw[: len(raw) // 2],
                     "empty": b""}[damage])
    _error("Bob_Brown_0002.jpg is not a readable JPEG image", path=tmp_path, people=("Alice_Anders", "Bob_Brown"))


def test_image_smaller_than_the_crop(tmp_path):
    (tmp_path / "A_A").mkdir()
    (tmp_path / "B_B").mkdir()
    for i in (1, 2):
        Image.new("RGB", (100, 100)).save(tmp_path / "A_A" / f"A_A_000{i}.jpg")
        Image.new("RGB", (250, 250)).save(tmp_path / "B_B" / f"B_B_000{i}.jpg")
    _error("A_A_0001.jpg is 100×100 pixels, smaller than the crop", path=tmp_path, people=("A_A", "B_B"))
    assert datasets.load("lfw", path=tmp_path, people=("A_A", "B_B"), crop=(0, 100, 0, 100)).image_shape == (50, 50)


def test_unknown_person_is_named_with_known_ones(tree):
    message = _error("unknown person 'Alice_Andrews'", path=tree, people=("Alice_Andrews", "Bob_Brown"))
    assert "Alice_Anders" in message
    message = _error("unknown person 'Zed'", path=tree, people=("Bob_Brown", "Zed"))
    assert "Alice_Anders" in message and "Bob_Brown" in message  # the people with most images


def test_fewer_than_two_classes(tree):
    _error("fewer than two classes", path=tree, people=("Alice_Anders",), min_faces=4)
    _error("fewer than two classes", path=tree, people=("Bob_Brown", "Bob_Brown"))
    _error("Alice_Anders has 4 images.*fewer than min_faces=5", path=tree, people=("Alice_Anders",), min_faces=5)


@pytest.mark.parametrize("options, match", [
    ({"people": ("A", "B", "C")}, "people must be two names"),
    ({"people": ()}, "people must be two names"),
    ({"people": 3}, "people must be two names"),
    ({"people": ("Alice_Anders",), "min_faces": 0}, "min_faces must be a positive integer"),
    ({"people": ("Alice_Anders",), "min_faces": 2.5}, "min_faces must be a positive integer"),
    ({"people": ("Alice_Anders", "Bob_Brown"), "resize": 0}, "resize must be a positive number"),
    ({"people": ("Alice_Anders", "Bob_Brown"), "resize": "big"}, "resize must be a positive number"),
    ({"people": ("Alice_Anders", "Bob_Brown"), "resize": 0.001}, "shrinks"),
    ({"people": ("Alice_Anders", "Bob_Brown"), "crop": (1, 2, 3)}, "crop must be"),
    ({"people": ("Alice_Anders", "Bob_Brown"), "crop": (100, 50, 0, 10)}, "top < bottom"),
    ({"people": ("Alice_Anders", "Bob_Brown"), "crop": (slice(0, 100, 2), slice(0, 100))}, "crop must be"),
])
def test_bad_options(tree, options, match):
    _error(match, path=tree, **options)


def test_load_needs_path_and_people(tree):
    _error("needs path=DIR.*people=", people=("A", "B"))
    _error("needs path=DIR.*people=", path=tree)
    _error("takes no option", path=tree, people=("A", "B"), color=True)


# ---- download (never run for real here) ----------------------------------------------------------------------
def test_download_lfw_calls_scikit_learn(tmp_path, tree, monkeypatch):
    import sklearn.datasets

    calls = []

    def fake_fetch(**kwargs):
        calls.append(kwargs)
        shutil.copytree(tree / "lfw-deepfunneled", tmp_path / "lfw_home" / "lfw_funneled")

    monkeypatch.setattr(sklearn.datasets, "fetch_lfw_people", fake_fetch)
    folder = download_lfw(tmp_path)
    assert folder == tmp_path / "lfw_home"
    assert calls[0]["data_home"] == str(tmp_path) and calls[0]["download_if_missing"] is True
    assert len(datasets.load("lfw", path=folder, people=("Alice_Anders", "Bob_Brown"))) == 7
    assert len(datasets.load("lfw", path=tmp_path, people=("Alice_Anders", "Bob_Brown"))) == 7

    def offline(**kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(sklearn.datasets, "fetch_lfw_people", offline)
    with pytest.raises(DataError, match="could not download LFW.*network is unreachable"):
        download_lfw(tmp_path / "elsewhere")


# ---- the CNN on 62×47 faces --------------------------------------------------------------------------------------
TINY = {"channels": (2, 2, 2), "dense": 4, "epochs": 1, "batch_size_train": 4, "seed": 1}


def test_cnn_fits_and_scores_faces_and_round_trips(pair, tmp_path):
    model = CNN(image_shape=pair.image_shape, **TINY).fit(pair.X, pair.y)
    scores = model.decision_function(pair.X)
    assert scores.shape == (7, 2) and np.all(np.isfinite(scores))
    assert model.input_gradient(pair.X[:3], pair.y[:3]).shape == (3, 62 * 47)
    assert model.get_params()["image_shape"] == (62, 47)
    models.save(model, tmp_path / "cnn")
    loaded = models.load(tmp_path / "cnn")
    assert isinstance(loaded, CNN) and loaded.image_shape == (62, 47)
    np.testing.assert_allclose(loaded.decision_function(pair.X), scores, rtol=1e-6, atol=1e-7)
    # from the registry, with the shape as a config list
    listed = models.create("cnn", image_shape=[62, 47], **TINY).fit(pair.X, pair.y)
    assert listed.image_shape == (62, 47) and np.array_equal(listed.decision_function(pair.X), scores)


def test_cnn_at_resize_0_4(tree):
    data = datasets.load("lfw", path=tree, people=("Alice_Anders", "Bob_Brown"), resize=0.4)
    model = CNN(image_shape=data.image_shape, **TINY).fit(data.X, data.y)
    assert model.decision_function(data.X).shape == (7, 2)


def test_cnn_shape_errors(pair):
    with pytest.raises(ConfigError, match="image_shape"):
        CNN(**TINY).fit(pair.X, pair.y)  # 2914 features: not a square
    with pytest.raises(ConfigError, match="image_shape=50×37 has 1850 pixels but the rows have 2914"):
        CNN(image_shape=(50, 37), **TINY).fit(pair.X, pair.y)
    with pytest.raises(ConfigError, match="at least 12×12"):
        CNN(image_shape=(62 * 47 // 11, 11), **TINY).fit(pair.X[:, : 62 * 47 // 11 * 11], pair.y)
    # scikit-learn's convention: the constructor stores parameters, fit validates them
    with pytest.raises(ConfigError, match="'image_shape' must be"):
        CNN(image_shape=(62,), **TINY).fit(pair.X, pair.y)
    with pytest.raises(ConfigError, match="'image_shape' must be"):
        CNN(image_shape=(0, 5), **TINY).fit(pair.X, pair.y)


#: scores of CNN(channels=(8, 8, 8), dense=16, epochs=2, batch_size_train=16, seed=3) fit on the conftest's
#: small_split of the embedded MNIST89, recorded before ``image_shape`` was added
MNIST_SCORES_FIRST_ROWS = np.array([[0.0322374292, -0.0350741148], [0.0367193334, -0.0443732738],
                                    [0.0247660726, -0.0452294275], [0.0338725857, -0.0399815068]])
MNIST_SCORES_SUM = np.array([2.3047564831, -3.6059026048])


def test_cnn_on_mnist_unchanged(small_split):
    X, y, test = small_split.target.X, small_split.target.y, small_split.test.X
    params = {"channels": (8, 8, 8), "dense": 16, "epochs": 2, "batch_size_train": 16, "seed": 3}
    square = CNN(**params).fit(X, y)
    explicit = CNN(image_shape=(28, 28), **params).fit(X, y)
    scores = square.decision_function(test)
    assert np.array_equal(scores, explicit.decision_function(test))
    np.testing.assert_allclose(scores[:4], MNIST_SCORES_FIRST_ROWS, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scores.sum(axis=0), MNIST_SCORES_SUM, rtol=1e-5)
