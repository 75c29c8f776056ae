"""``shendu gradcheck``: central differences against backpropagation for every parameter
of a small model of each kind (float64)."""

from __future__ import annotations

import math
import time

import numpy as np

from shendu.cli.errors import CLIError


# -------------------------------------------------------------------- gradcheck
def _gc_models():
    """Small float64 versions of the networks the ready models build, one per family:
    ``name -> (what it is, build, input, target)``. Each network's forward returns
    class scores (N, K) (sequence models: one row per output position)."""
    import shendu
    from shendu import nn
    from shendu.models.attention import CharTransformerLM, SequenceEncoderNet
    from shendu.models.cnn import make_cnn
    from shendu.models.mlp import make_mlp
    from shendu.models.recurrent import CharLM, RecurrentHeadNet
    from shendu.models.seq2seq import Seq2SeqNet

    rng = np.random.Generator(np.random.PCG64(0))

    def seq(n, T=5, F=3):
        return rng.standard_normal((n, T, F))

    class SelfAttn(nn.Module):
        def __init__(self, d, k):
            super().__init__()
            self.attn, self.head = nn.MultiheadAttention(d, 2, batch_first=True), nn.Linear(d, k)

        def forward(self, x):
            out, _ = self.attn(x, x, x, need_weights=False)
            return self.head(out.mean(dim=1))

    class Flat(nn.Module):
        """Token-sequence models: (N, T) ids -> (N*T, V) scores for a cross-entropy."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x.data.astype(np.int64))
            out = out[0] if isinstance(out, tuple) else out
            return out.reshape(-1, out.shape[-1])

    class Seq2Seq(nn.Module):
        """Seq2SeqNet under teacher forcing on fixed sources and decoder inputs."""

        def __init__(self, net, lengths, dec_in):
            super().__init__()
            self.net, self.lengths, self.dec_in = net, lengths, dec_in

        def forward(self, x):
            out = self.net(x.data.astype(np.int64), self.lengths, self.dec_in)
            return out.reshape(-1, out.shape[-1])

    y3 = rng.integers(0, 3, 4)
    V = 5
    ids = rng.integers(0, V, (3, 6)).astype(np.float64)
    src = rng.integers(0, 4, (3, 4)).astype(np.float64)
    lengths = np.array([4, 3, 2])
    src[1, 3:] = 4                                            # padding (end id)
    src[2, 2:] = 4
    dec_in = np.concatenate([np.full((3, 1), 5), src[:, ::-1][:, :3]], 1).astype(np.int64)
    dec_in[dec_in == 4] = 0
    return {
        "mlp": ("MLPClassifier's make_mlp 4-6-3, tanh",
                lambda: make_mlp([4, 6, 3], "tanh"), rng.standard_normal((4, 4)), y3),
        "cnn": ("ConvolutionalNeuralNetwork's make_cnn: conv 3@3x3, pool, 3",
                lambda: make_cnn((1, 6, 6), 3, conv_channels=(3,), kernel_size=3,
                                 hidden_layer_sizes=(), activation="tanh"),
                rng.standard_normal((4, 1, 6, 6)), y3),
        "rnn": ("RecurrentNeuralNetwork's RecurrentHeadNet (tanh RNN, head on the last step)",
                lambda: RecurrentHeadNet("rnn", 3, 4, 1, 3), seq(4), y3),
        "lstm": ("LongShortTermMemory's RecurrentHeadNet (2 layers)",
                 lambda: RecurrentHeadNet("lstm", 3, 4, 2, 3), seq(4), y3),
        "gru": ("GatedRecurrentUnit's RecurrentHeadNet (bidirectional)",
                lambda: RecurrentHeadNet("gru", 3, 4, 1, 3, bidirectional=True), seq(4), y3),
        "transformer": ("TransformerClassifier's SequenceEncoderNet (pre-norm, GELU)",
                        lambda: SequenceEncoderNet(3, d_model=4, nhead=2, num_layers=1,
                                                   dim_feedforward=8, dropout=0.0,
                                                   n_features=4, max_len=5),
                        seq(4, 5, 4), y3),
        # location_aware=False: the location term reads the previous step's weights as a
        # constant input (no gradient flows back through it, by design), which central
        # differences would see
        "attention": ("AttentionMechanism's Seq2SeqNet (GRU encoder-decoder, additive "
                      "attention; without the location term, whose input is detached)",
                      lambda: Seq2Seq(Seq2SeqNet(4, embed_dim=3, hidden_size=4,
                                                 location_aware=False), lengths, dec_in),
                      src, rng.integers(0, 5, 12)),
        "self-attention": ("nn.MultiheadAttention, 2 heads, mean-pooled",
                           lambda: SelfAttn(4, 3), seq(4, 5, 4), y3),
        "char-lm": ("CharLM (embedding, LSTM, readout)",
                    lambda: Flat(CharLM("abcde", hidden_size=4, num_layers=1,
                                        embedding_dim=3)), ids, rng.integers(0, V, 18)),
        "char-transformer": ("CharTransformerLM (causal, pre-norm)",
                             lambda: Flat(CharTransformerLM(V, d_model=4, nhead=2,
                                                            num_layers=1, dim_feedforward=8,
                                                            dropout=0.0, block_size=6)),
                             ids, rng.integers(0, V, 18)),
    }, shendu


GRADCHECK_MODELS = ("mlp", "cnn", "rnn", "lstm", "gru", "transformer", "attention",
                    "self-attention", "char-lm", "char-transformer")

def _gc_name(name: str) -> str:
    """The gradcheck case for a model name: a case itself, or a model of the registry (by
    class name or alias) and the case it names."""
    from shendu.cli.registry import _ALIASES, MODELS

    name = name.lower()
    if name in GRADCHECK_MODELS:
        return name
    spec = MODELS.get(_ALIASES.get(name, name))
    if spec is not None and spec.gradcheck is not None:
        return spec.gradcheck
    return {"multilayerperceptron": "mlp"}.get(name, name)


def gradcheck_model(model, x: np.ndarray, y: np.ndarray, eps: float = 1e-6,
                    max_elements: int | None = None, seed: int = 0,
                    floor: float = 1e-4) -> list[tuple]:
    """Central differences against backpropagation for every parameter of ``model``
    (float64): ``[(name, shape, worst relative error, elements checked)]``.

    The relative error of one element is ``|a - n| / max(|a|, |n|, floor)`` where ``a`` is
    the analytic and ``n = (L(p + eps) - L(p - eps)) / (2 eps)`` the numerical derivative
    of the cross-entropy loss ``L``. The numerical one is only good to about
    ``u |L| / eps`` (rounding, ``u = 2.2e-16``: about 2e-10 for ``L ~ 1``, ``eps = 1e-6``)
    plus ``eps^2 / 6`` times the third derivative (truncation); the floor keeps a
    derivative that small (deep in a recurrent stack, say) from counting as a large
    relative error: below ``floor`` the error is measured against ``floor``, i.e.
    absolutely.
    """
    import shendu
    from shendu import nn

    loss_fn = nn.CrossEntropyLoss()
    xt = shendu.from_numpy(np.ascontiguousarray(x, np.float64))

    def loss() -> float:
        with shendu.no_grad():
            return float(loss_fn(model(xt), y).item())

    model.zero_grad()
    loss_fn(model(xt), y).backward()
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for name, p in model.named_parameters():
        if p.grad is None:
            out.append((name, p.data.shape, float("nan"), 0))
            continue
        g = np.asarray(p.grad.data, np.float64).reshape(-1)
        flat = p.data.reshape(-1)
        idx = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            idx = np.sort(rng.choice(flat.size, max_elements, replace=False))
        worst = 0.0
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            lp = loss()
            flat[i] = old - eps
            lm = loss()
            flat[i] = old
            n = (lp - lm) / (2 * eps)
            worst = max(worst, abs(g[i] - n) / max(abs(g[i]), abs(n), floor))
        out.append((name, p.data.shape, worst, len(idx)))
    return out


def _cmd_gradcheck(args) -> int:
    name = args.model.lower()
    if name == "perceptron":
        raise CLIError("Perceptron learns by Rosenblatt's mistake-driven rule, not by "
                       "gradients: there is nothing to gradcheck (try mlp)")
    name = _gc_name(name)
    models, shendu = _gc_models()
    if name not in models:
        raise CLIError(f"unknown model {args.model!r} for gradcheck; choose one of "
                       f"{', '.join(GRADCHECK_MODELS)}")
    what, build, x, y = models[name]
    shendu.manual_seed(args.seed)
    model = build().double()
    model.eval()
    t0 = time.perf_counter()
    rows = gradcheck_model(model, x, y, eps=args.eps, max_elements=args.max_elements,
                           seed=args.seed, floor=args.floor)
    worst = max((r[2] for r in rows if not math.isnan(r[2])), default=0.0)
    width = max(len(r[0]) for r in rows)
    print(f"gradcheck {name}: {what}")
    print(f"float64, central differences (eps={args.eps:g}) vs backpropagation, "
          f"cross-entropy loss on a batch of {len(x)}")
    print(f"{'parameter'.ljust(width)}  {'shape':<14} {'checked':>7}  worst rel. error")
    for pname, shape, err, n in rows:
        flag = "" if err <= args.tol else "   <-- FAIL" if not math.isnan(err) else "  (no grad)"
        print(f"{pname.ljust(width)}  {str(tuple(shape)):<14} {n:>7}  {err:.2e}{flag}")
    ok = worst <= args.tol and not any(math.isnan(r[2]) for r in rows)
    print(f"{'PASS' if ok else 'FAIL'}: worst relative error {worst:.2e} "
          f"(tolerance {args.tol:g}), {sum(r[3] for r in rows)} derivatives in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1
