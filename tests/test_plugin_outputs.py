"""Issue #27: third-party signals and embedders are held to their contract. A fingerprint of
the wrong shape stops the run naming the plugin and its package; a fingerprint that is NaN, or
that raises, makes that image unreadable with a reason naming the plugin; a plugin that gave
nothing usable for any image stops the run naming it; a similarity() that raises or answers
nonsense is a one-line error naming it. No model weights: a tiny stand-in model."""

import types

import numpy as np
import pytest

import curate
from curate.embedding import SignalSet, embed_files
from conftest import FIXTURES

PATHS = sorted((FIXTURES / "images").rglob("*.jpg"))[:3]


class _Model(curate.LoadedEmbedder):
    embedder, model_name, weights_digest, dim = "stand-in", "stand-in", "stand-in", 4

    def __init__(self, nan=False):
        self.nan = nan

    def preprocess(self, image):
        return np.zeros(3, np.uint8)

    def embed(self, batch):
        out = np.eye(4, dtype=np.float32)[np.arange(len(batch)) % 4]
        return out * np.nan if self.nan else out


class _Signal(curate.Signal):
    """Fingerprints by ``behaviour``: wide (a vector too long), nan, raise; on every image, or
    on the images whose position (in PATHS) is in ``bad``, and a good unit vector on the others."""

    dim = 4

    def __init__(self, behaviour, bad=None):
        self.name, self.behaviour = f"{behaviour}-signal", behaviour
        self.bad = None if bad is None else {PATHS[i] for i in bad}

    def fingerprint(self, image, path):
        if self.bad is not None and path not in self.bad:
            return np.array([1, 0, 0, 0], np.float32)
        if self.behaviour == "raise":
            raise ValueError("no\nhash")
        return np.full(5 if self.behaviour == "wide" else 4, np.nan if self.behaviour == "nan" else 0.5)


def embed(signal=None, model=None, processes=False):
    signals = SignalSet([signal] if signal else [])
    return embed_files(PATHS, model or _Model(), batch_size=4, workers=1, processes=processes, signals=signals)


@pytest.fixture
def registered(registry_with):
    """A signal registered by a plugin in code, so that messages name its package."""
    def register(signal):
        registry_with(types.SimpleNamespace(register_signals=curate.hookimpl(lambda register: register(signal))))
        return signal
    return register


@pytest.mark.parametrize("processes", [False, True])
def test_a_fingerprint_of_the_wrong_shape_stops_the_run_naming_the_plugin(registered, processes):
    signal = registered(_Signal("wide", bad=[1]))
    with pytest.raises(curate.CurateError) as error:
        embed(signal, processes=processes)
    assert str(error.value) == ("signal 'wide-signal' from package '(registered in code)' returned a fingerprint "
                                "of shape (5,); expected (4,)")


@pytest.mark.parametrize("behaviour, reason", [
    ("nan", "returned a fingerprint that is not finite (NaN or inf)"),
    ("raise", "failed: ValueError: no hash"),
])
def test_a_fingerprint_that_fails_on_one_image_makes_that_image_unreadable_naming_the_plugin(registered, behaviour,
                                                                                           reason):
    signal = registered(_Signal(behaviour, bad=[1]))
    result = embed(signal)
    assert result.ok.tolist() == [True, False, True]
    assert result.failures == {1: f"signal '{behaviour}-signal' from package '(registered in code)' {reason}"}


@pytest.mark.parametrize("processes", [False, True])
@pytest.mark.parametrize("behaviour", ["nan", "raise"])
def test_a_signal_that_fails_on_every_image_stops_the_run_naming_it(registered, behaviour, processes):
    signal = registered(_Signal(behaviour))
    with pytest.raises(curate.CurateError, match=f"^signal '{behaviour}-signal' from package '\\(registered in "
                                                 "code\\)' gave no usable output for any of the 3 images"):
        embed(signal, processes=processes)


def test_an_embedder_whose_every_vector_is_nan_stops_the_run_naming_it():
    with pytest.raises(curate.CurateError, match="^embedder 'stand-in' gave no usable output for any of the 3 "
                                                 r"images it was given \(first: returned a vector that is not finite"):
        embed(model=_Model(nan=True))


class _Threshold(curate.Signal):
    name, dim = "threshold-signal", 4

    def __init__(self, answer):
        self.answer = answer

    def fingerprint(self, image, path):
        return np.array([1, 0, 0, 0], np.float32)

    def similarity(self, value):
        if self.answer == "raise":
            raise ZeroDivisionError("oops")
        return self.answer


@pytest.mark.parametrize("answer, message", [
    ("raise", " failed: similarity(1.0) raised ZeroDivisionError: oops"),
    (float("nan"), ": similarity(1.0) returned nan; expected a finite number"),
    ("0.9", ": similarity(1.0) returned '0.9'; expected a finite number"),
])
def test_a_similarity_that_raises_or_answers_nonsense_is_named(registered, answer, message):
    registered(_Threshold(answer))
    with pytest.raises(curate.CurateError) as error:
        curate.SearchSettings(signals=("embedding", "threshold-signal")).resolved_signals()
    assert str(error.value) == f"signal 'threshold-signal' from package '(registered in code)'{message}"


@pytest.mark.slow
def test_dedup_with_a_signal_that_is_always_nan_is_a_one_line_error_and_writes_nothing(registered, tmp_path):
    from conftest import assert_one_line_error, run_curate
    registered(_Signal("nan"))
    out = tmp_path / "o.json"
    result = run_curate("dedup", FIXTURES / "dedup_demo.json", "-o", out, "--image-root", FIXTURES / "images",
                        "--embedder", "timm-pool", "--no-cache", "-q", "--signals", "nan-signal,embedding")
    assert_one_line_error(result, "signal 'nan-signal' from package '(registered in code)'", "no usable output")
    assert not out.exists() and not list(tmp_path.iterdir())
