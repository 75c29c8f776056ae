"""The one registry of ready models every subcommand reads (:data:`MODELS`; adding a
model is one :class:`ModelSpec` line), how the command line's settings map onto each
model, its metrics, and the CLI's checkpoints."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np

from shendu.cli.data import Data, _must_exist
from shendu.cli.errors import CLIError


# ========================================================================== models
@dataclass(frozen=True)
class ModelSpec:
    """How the CLI drives a ready model: its class in ``shendu.models``, the input it
    takes (``flat`` (N, F), ``image`` (N, C, H, W), ``sequence`` (N, T, F), ``seq2seq``
    token sequences, ``text`` a character corpus), its task and how it trains
    (``epochs``: one ``partial_fit`` per epoch, resumable; ``fit``: one ``fit`` of all the
    epochs; ``steps``: a language model's ``fit(corpus, steps)``; ``seed``: the seed's
    ``train(X, y, epochs, learning_rate)``); the short names it also answers to, and which
    network ``shendu gradcheck`` checks for it (``None``: nothing to check)."""

    cls: str
    input: str
    task: str
    doc: str
    how: str = "epochs"
    aliases: tuple[str, ...] = ()
    gradcheck: str | None = None


#: Every ready model of the CLI: adding one is one line here.
MODELS: dict[str, ModelSpec] = {s.cls.lower(): s for s in [
    ModelSpec("Perceptron", "flat", "classify", "Rosenblatt's perceptron (1958), one-vs-rest"),
    ModelSpec("MLPClassifier", "flat", "classify", "multi-layer perceptron, backpropagation",
              aliases=("mlp",), gradcheck="mlp"),
    ModelSpec("MLPRegressor", "flat", "regress", "multi-layer perceptron for regression",
              gradcheck="mlp"),
    ModelSpec("NeuralNetwork", "flat", "regress", "the seed's one-hidden-layer network "
              "(sigmoid, squared error, plain gradient descent)", "seed", aliases=("seed",),
              gradcheck="mlp"),
    ModelSpec("ConvolutionalNeuralNetwork", "image", "classify", "LeNet-style CNN",
              aliases=("cnn",), gradcheck="cnn"),
    ModelSpec("RecurrentNeuralNetwork", "sequence", "auto", "Elman RNN (1990)", "fit",
              aliases=("rnn",), gradcheck="rnn"),
    ModelSpec("LongShortTermMemory", "sequence", "auto", "LSTM (1997)", "fit",
              aliases=("lstm",), gradcheck="lstm"),
    ModelSpec("GatedRecurrentUnit", "sequence", "auto", "GRU (2014)", "fit",
              aliases=("gru",), gradcheck="gru"),
    ModelSpec("TransformerClassifier", "sequence", "classify", "transformer encoder (2017)",
              "fit", aliases=("transformer",), gradcheck="transformer"),
    ModelSpec("AttentionMechanism", "seq2seq", "seq2seq", "RNN encoder-decoder with "
              "additive attention (2014)", "fit", aliases=("attention", "seq2seq"),
              gradcheck="attention"),
    ModelSpec("CharLM", "text", "lm", "character LSTM language model", "steps",
              aliases=("char-lm",), gradcheck="char-lm"),
    ModelSpec("CharTransformerLM", "text", "lm", "character transformer language model",
              "steps", aliases=("char-transformer",), gradcheck="char-transformer"),
]}
_ALIASES = {a: key for key, s in MODELS.items() for a in s.aliases}

#: Classic tasks by name: ``shendu train mnist`` is ``shendu train cnn --data mnist``.
TASKS: dict[str, tuple[str, str]] = {"mnist": ("cnn", "mnist")}


def resolve_task(args) -> None:
    """Turn ``shendu train TASK`` into its model and (unless ``--data`` says otherwise)
    its data set."""
    task = TASKS.get(str(args.model).lower())
    if task is not None:
        args.model = task[0]
        if getattr(args, "data", None) is None:
            args.data = task[1]

_HYPER = {"epochs": ("epochs", "max_epochs", "max_iter", "n_epochs"),
          "lr": ("learning_rate", "lr", "learning_rate_init", "eta0"),
          "batch_size": ("batch_size",),
          "seed": ("random_state", "seed")}


def _model_spec(name: str) -> tuple[ModelSpec, type]:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        known = ", ".join(s.cls for s in MODELS.values())
        raise CLIError(f"unknown model {name!r}; models: {known} (aliases: "
                       f"{', '.join(_ALIASES)})")
    spec = MODELS[key]
    import shendu.models as sm

    return spec, getattr(sm, spec.cls)


def _construct(cls: type, args, extra: dict | None = None) -> object:
    """The model with the command line's hyper-parameters mapped onto its own names."""
    params = inspect.signature(cls.__init__).parameters
    kw: dict = {}
    for ours, theirs in _HYPER.items():
        value = getattr(args, ours, None)
        if value is None:
            continue
        for t in theirs:
            if t in params:
                kw[t] = value
                break
    if "verbose" in params:
        kw["verbose"] = 0
    if "random_state" in params and "random_state" not in kw:
        kw["random_state"] = 0
    hidden = getattr(args, "hidden", None)
    if hidden and "hidden_layer_sizes" in params:
        kw["hidden_layer_sizes"] = tuple(hidden)
    elif hidden and "hidden_size" in params:
        kw["hidden_size"] = int(hidden[0])
    elif hidden and "d_model" in params:
        kw["d_model"] = int(hidden[0])
    kw.update({k: v for k, v in (extra or {}).items() if k in params})
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise CLIError(f"{cls.__name__}: {e}") from None


def _check_fits(spec: ModelSpec, data: Data, where: str) -> None:
    """One clear line when the model and the data do not go together."""
    if spec.input == "text" and data.kind != "text":
        raise CLIError(f"{where}: {spec.cls} is a character language model and trains on "
                       f"text (--data shakespeare or a .txt file), not on "
                       f"{'token sequence pairs' if data.kind == 'seq2seq' else 'features'}")
    if spec.input == "seq2seq" and data.kind != "seq2seq":
        raise CLIError(f"{where}: {spec.cls} maps token sequences to token sequences "
                       f"(--data reverse, copy or sort), not "
                       f"{'text' if data.kind == 'text' else 'features and labels'}")
    if spec.input not in ("text", "seq2seq") and data.kind != "arrays":
        raise CLIError(f"{where}: {spec.cls} needs features and labels, but this is "
                       + ("text (train char-lm or char-transformer on it)"
                          if data.kind == "text" else
                          "a sequence-to-sequence task (train attention on it)"))


def _shape_for(spec: ModelSpec, X: np.ndarray, where: str) -> np.ndarray:
    """Bring ``X`` to the layout the model takes, or say why it cannot be."""
    X = np.asarray(X)
    if X.dtype == object or not np.issubdtype(X.dtype, np.number):
        raise CLIError(f"{where}: features must be numeric, got dtype {X.dtype}")
    if X.ndim == 0 or len(X) == 0:
        raise CLIError(f"{where}: no samples (features of shape {X.shape})")
    if spec.input == "flat":
        if X.ndim == 1:
            raise CLIError(f"{where}: {spec.cls} expects features of shape (n_samples, "
                           f"n_features), got shape {X.shape}")
        return X.reshape(len(X), -1)
    if spec.input == "image":
        if X.ndim == 2:
            side = int(round(math.sqrt(X.shape[1])))
            if side * side != X.shape[1]:
                raise CLIError(f"{where}: {spec.cls} expects images (N, H, W) or (N, C, H, W); "
                               f"got flat features of shape {X.shape} that are not square")
            return X.reshape(len(X), side, side)
        if X.ndim not in (3, 4):
            raise CLIError(f"{where}: {spec.cls} expects images (N, H, W) or (N, C, H, W), "
                           f"got shape {X.shape}")
        return X
    if X.ndim == 2:
        side = int(round(math.sqrt(X.shape[1])))
        if side * side != X.shape[1]:
            raise CLIError(f"{where}: {spec.cls} expects sequences (N, T, F), got shape "
                           f"{X.shape}")
        return X.reshape(len(X), side, side)  # images read row by row
    if X.ndim != 3:
        raise CLIError(f"{where}: {spec.cls} expects sequences (N, T, F), got shape {X.shape}")
    return X


def _is_classifier(model) -> bool:
    return getattr(model, "_estimator_type", None) == "classifier"


def _metrics(model, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = np.asarray(model.predict(X))
    if _is_classifier(model):
        out = {"accuracy": float(np.mean(pred == y)), "correct": int(np.sum(pred == y)),
               "n": len(y)}
        if hasattr(model, "predict_proba"):
            try:
                p = np.asarray(model.predict_proba(X), np.float64)
                idx = np.searchsorted(np.asarray(model.classes_), y)
                ok = (idx < p.shape[1])
                idx = np.minimum(idx, p.shape[1] - 1)
                ok &= np.asarray(model.classes_)[idx] == y
                pr = np.where(ok, p[np.arange(len(y)), idx], 0.0)
                out["log_loss"] = float(-np.mean(np.log(np.clip(pr, 1e-15, 1.0))))
            except (AttributeError, ValueError):
                pass
        return out
    return _regression_metrics(pred, y)


def _regression_metrics(pred, y) -> dict[str, float]:
    """MSE, MAE and R² of predictions against targets (R² NaN for constant targets)."""
    pred = np.asarray(pred, np.float64)
    y = np.asarray(y, np.float64).reshape(pred.shape)
    err = pred - y
    var = float(np.var(y))
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))),
            "r2": 1.0 - float(np.mean(err ** 2)) / var if var > 0 else float("nan"),
            "n": len(y)}


def _format_metrics(m: dict) -> str:
    if "exact" in m:
        return f"exact sequences {m['exact']:.4f} ({int(round(m['exact'] * m['n']))}/{m['n']})"
    if "accuracy" in m:
        s = f"accuracy {m['accuracy']:.4f} ({m['correct']}/{m['n']})"
        if "log_loss" in m:
            s += f"  log-loss {m['log_loss']:.4f}"
        return s
    return f"MSE {m['mse']:.6g}  MAE {m['mae']:.6g}  R^2 {m['r2']:.4f}  (n={m['n']})"


# ---------------------------------------------------------------- checkpoints
def save_model_checkpoint(path: str, model, info: dict) -> None:
    """A checkpoint of ``shendu train``: the whole model (ready models save their weights,
    optimizer state and fitted attributes through ``_shendu_state``; modules their
    configuration and ``state_dict``) and ``info`` (data, epoch, history, RNG state)."""
    from shendu.io import save_checkpoint

    save_checkpoint(path, cli=info, model=model)


def load_model_checkpoint(path: str):
    """``(model, info)`` from a checkpoint written by ``shendu train``."""
    from shendu.io import FileFormatError, load_checkpoint

    _must_exist(path, "checkpoint")
    try:
        state = load_checkpoint(path)
    except FileFormatError as e:
        raise CLIError(str(e)) from None
    if "cli" not in state or "model" not in state or not isinstance(state["cli"], dict):
        raise CLIError(f"{path}: not a checkpoint written by `shendu train`")
    info = state["cli"]
    if str(info.get("model", "")).lower() not in MODELS:
        raise CLIError(f"{path}: the checkpoint names an unknown model "
                       f"{str(info.get('model'))[:60]!r}")
    return state["model"], info
