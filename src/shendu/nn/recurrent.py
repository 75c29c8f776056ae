r"""Recurrent layers: ``RNN``, ``LSTM``, ``GRU`` and their one-step cells.

The API, parameter names, shapes, gate order and default initialisation are torch's, so a
torch ``state_dict`` loads unchanged:

* ``weight_ih_l{k}{suffix}`` of shape ``(G·H, I_k)`` (``I_0 = input_size``, ``I_k = D·H``
  above), ``weight_hh_l{k}{suffix}`` ``(G·H, H)``, ``bias_ih_l{k}{suffix}`` and
  ``bias_hh_l{k}{suffix}`` ``(G·H,)``, with ``suffix`` ``""`` or ``"_reverse"``, ``G`` = 1
  (RNN), 4 (LSTM, gates ``i, f, g, o``) or 3 (GRU, gates ``r, z, n``);
* every parameter drawn from ``U(-1/sqrt(H), 1/sqrt(H))``.

Each layer-direction is one fused scan with a hand-derived backward
(:mod:`shendu.functional.recurrent`, where the equations are).

Variable-length batches: pass ``lengths`` (one integer per sequence) to ``forward``. Steps
past a sequence's length leave its state unchanged and output zeros; ``h_n`` (and ``c_n``)
hold each sequence's state at its last real step, in both directions — what torch returns
for a ``pack_padded_sequence`` input (whose padded output is ``pad_packed_sequence(...,
total_length=T)``).

Truncated backpropagation through time: feed a long sequence in chunks, carrying the state
forward but cutting the graph, e.g. ::

    state = None
    for chunk in chunks:                       # (T_chunk, B, I) pieces of one long stream
        out, state = lstm(chunk, state)
        loss = criterion(head(out), targets_of(chunk))
        loss.backward(); opt.step(); opt.zero_grad()
        state = tuple(s.detach() for s in state)   # (h, c); for RNN/GRU: state.detach()

The forward pass still sees the whole history through the carried state; gradients stop at
the chunk boundary (Williams & Peng 1990, "An efficient gradient-based algorithm for
on-line training of recurrent network trajectories").
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from shendu import functional as F
from shendu.autograd import grad as _autograd_grad
from shendu.backend import get_default_dtype
from shendu.nn import init
from shendu.nn.module import Module, Parameter
from shendu.tensor import Tensor

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "bptt_gradient_norms"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _positive_int(name: str, what: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{name}: {what} must be a positive integer, got {v!r}")
    return int(v)


class RNNBase(Module):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU`."""

    mode = "RNN_TANH"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        name = type(self).__name__
        from shendu.device import check_device
        check_device(device, name)
        self.input_size = _positive_int(name, "input_size", input_size)
        self.hidden_size = _positive_int(name, "hidden_size", hidden_size)
        self.num_layers = _positive_int(name, "num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout should be a number in [0, 1] (the probability "
                             f"of zeroing an element), got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} acts between layers, so with "
                          "num_layers=1 it does nothing", stacklevel=2)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        dt = np.dtype(dtype) if dtype is not None else get_default_dtype()
        G, H = _GATES[self.mode], self.hidden_size
        D = 2 if self.bidirectional else 1
        self._flat_names: list[list[str]] = []
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else H * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                setattr(self, names[0], Parameter(np.empty((G * H, in_size), dt)))
                setattr(self, names[1], Parameter(np.empty((G * H, H), dt)))
                if self.bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
                    setattr(self, names[2], Parameter(np.empty((G * H,), dt)))
                    setattr(self, names[3], Parameter(np.empty((G * H,), dt)))
                self._flat_names.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias from ``U(-1/sqrt(H), 1/sqrt(H))``, as torch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def flatten_parameters(self) -> None:
        """Does nothing, and is there so torch code that calls it runs unchanged.

        In torch it packs the weights into one contiguous cuDNN buffer (a GPU speed-up);
        shendu's scan reads each parameter array where it is, so there is nothing to pack."""

    # ------------------------------------------------------------------ checks
    def _check_input(self, x: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a Tensor input, got {type(x).__name__}")
        if x.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input with 2 (unbatched: T, input_size) or 3 "
                             f"dimensions, got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name} expected input size {self.input_size} at dim -1, got "
                             f"{x.shape[-1]}")
        dt = self.weight_ih_l0.dtype
        if x.dtype != dt:
            raise TypeError(f"{name}: expected input of dtype {dt} (the parameters' dtype), "
                            f"got {x.dtype}")
        if x.shape[0 if (x.ndim == 2 or not self.batch_first) else 1] == 0:
            raise ValueError(f"{name}: expected a sequence of at least one step, got input "
                             f"of shape {tuple(x.shape)}")

    def _check_state(self, h, what: str, batched: bool, B: int) -> Tensor:
        name = type(self).__name__
        D = 2 if self.bidirectional else 1
        exp = (self.num_layers * D, B, self.hidden_size) if batched else \
            (self.num_layers * D, self.hidden_size)
        if not isinstance(h, Tensor):
            raise TypeError(f"{name}: expected {what} to be a Tensor, got {type(h).__name__}")
        if tuple(h.shape) != exp:
            raise ValueError(f"{name} expected {what} of shape {exp}, got {tuple(h.shape)}")
        if h.dtype != self.weight_ih_l0.dtype:
            raise TypeError(f"{name}: expected {what} of dtype {self.weight_ih_l0.dtype}, got "
                            f"{h.dtype}")
        return h if batched else h.unsqueeze(1)

    def _states(self, hx, batched: bool, B: int) -> list:
        n = 2 if self.mode == "LSTM" else 1
        names = ("h0", "c0")[:n]
        if hx is None:
            D = 2 if self.bidirectional else 1
            z = Tensor(np.zeros((self.num_layers * D, B, self.hidden_size),
                                self.weight_ih_l0.dtype))
            return [z] * n
        if n == 2:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM: expected hx to be a tuple (h0, c0), got "
                                f"{type(hx).__name__}")
            return [self._check_state(h, w, batched, B) for h, w in zip(hx, names)]
        return [self._check_state(hx, "h0", batched, B)]

    # ----------------------------------------------------------------- forward
    def forward(self, input: Tensor, hx=None, lengths=None):
        """Run the stack. ``input`` (T, B, I) — (B, T, I) with ``batch_first`` — or an
        unbatched (T, I); ``hx`` the initial state(s) (L·D, B, H) (``(h0, c0)`` for LSTM),
        zeros if omitted; ``lengths`` optional, one integer per sequence.

        Returns ``(output, h_n)`` (``(output, (h_n, c_n))`` for LSTM): ``output`` holds the
        last layer's states at every step, both directions concatenated (T, B, D·H);
        ``h_n`` (L·D, B, H) the final state of every layer and direction.
        """
        self._check_input(input)
        batched = input.ndim == 3
        x = input
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        B = x.shape[1]
        if lengths is not None and not batched:
            lengths = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
            lengths = lengths.reshape(1)
        states = self._states(hx, batched, B)
        D = 2 if self.bidirectional else 1
        finals: list[list[Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                w = [getattr(self, n) for n in self._flat_names[k]]
                init_k = [s[k] for s in states]
                res = self._scan(x, init_k, w, lengths, bool(d))
                outs.append(res[0])
                for f, r in zip(finals, res[1:]):
                    f.append(r)
            x = outs[0] if D == 1 else F.cat(outs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        output = x
        finals = [f[0].unsqueeze(0) if len(f) == 1 else F.stack(f, 0) for f in finals]
        if not batched:
            output = output.squeeze(1)
            finals = [f.squeeze(1) for f in finals]
        elif self.batch_first:
            output = output.transpose(0, 1)
        if self.mode == "LSTM":
            return output, (finals[0], finals[1])
        return output, finals[0]

    def _scan(self, x, init_states, w, lengths, reverse):
        b = w[2:] if self.bias else [None, None]
        if self.mode == "LSTM":
            return F.lstm(x, init_states[0], init_states[1], w[0], w[1], *b, lengths=lengths,
                          reverse=reverse)
        if self.mode == "GRU":
            return F.gru(x, init_states[0], w[0], w[1], *b, lengths=lengths, reverse=reverse)
        nl = "relu" if self.mode == "RNN_RELU" else "tanh"
        return F.rnn(x, init_states[0], w[0], w[1], *b, nonlinearity=nl, lengths=lengths,
                     reverse=reverse)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    r"""Elman (1990) recurrent network: ``h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``,
    ``φ`` = ``tanh`` (default) or ``relu``; torch's ``nn.RNN``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None,
                 dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r} (expected 'tanh' or "
                             "'relu')")
        self.nonlinearity = nonlinearity
        object.__setattr__(self, "mode", "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


class LSTM(RNNBase):
    r"""Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate: Gers, Schmidhuber
    & Cummins 2000); torch's ``nn.LSTM`` (gate order ``i, f, g, o``)::

        i, f, o = σ(W_i* x + b_i* + W_h* h + b_h*)      g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        c' = f ⊙ c + i ⊙ g                              h' = o ⊙ tanh(c')

    Returns ``(output, (h_n, c_n))``. ``proj_size`` is not supported.
    """

    mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None,
                 dtype=None) -> None:
        if proj_size:
            raise NotImplementedError("LSTM: proj_size > 0 (LSTMP) is not supported")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


class GRU(RNNBase):
    r"""Gated recurrent unit (Cho et al. 2014); torch's ``nn.GRU`` (gate order ``r, z, n``)::

        r, z = σ(W_i* x + b_i* + W_h* h + b_h*)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h
    """

    mode = "GRU"


# ---------------------------------------------------------------------------- cells
class RNNCellBase(Module):
    """Shared machinery of the one-step cells (parameters ``weight_ih``, ``weight_hh``,
    ``bias_ih``, ``bias_hh`` as torch's)."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        name = type(self).__name__
        from shendu.device import check_device
        check_device(device, name)
        self.input_size = _positive_int(name, "input_size", input_size)
        self.hidden_size = _positive_int(name, "hidden_size", hidden_size)
        self.bias = bool(bias)
        dt = np.dtype(dtype) if dtype is not None else get_default_dtype()
        GH = self.gates * self.hidden_size
        self.weight_ih = Parameter(np.empty((GH, self.input_size), dt))
        self.weight_hh = Parameter(np.empty((GH, self.hidden_size), dt))
        if self.bias:
            self.bias_ih = Parameter(np.empty((GH,), dt))
            self.bias_hh = Parameter(np.empty((GH,), dt))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _prepare(self, x: Tensor, hx, n_states: int):
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a Tensor input, got {type(x).__name__}")
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: expected input (B, input_size) or (input_size,), got "
                             f"shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name} expected input size {self.input_size} at dim -1, got "
                             f"{x.shape[-1]}")
        dt = self.weight_ih.dtype
        if x.dtype != dt:
            raise TypeError(f"{name}: expected input of dtype {dt} (the parameters' dtype), "
                            f"got {x.dtype}")
        batched = x.ndim == 2
        if not batched:
            x = x.unsqueeze(0)
        B = x.shape[0]
        exp = (B, self.hidden_size) if batched else (self.hidden_size,)
        if hx is None:
            states = [Tensor(np.zeros((B, self.hidden_size), dt)) for _ in range(n_states)]
        else:
            hs = list(hx) if n_states > 1 else [hx]
            if n_states > 1 and len(hs) != n_states:
                raise TypeError(f"{name}: expected hx to be a tuple (h, c)")
            states = []
            for h, what in zip(hs, ("h", "c")):
                if not isinstance(h, Tensor) or tuple(h.shape) != exp:
                    got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
                    raise ValueError(f"{name} expected state {what} of shape {exp}, got {got}")
                if h.dtype != dt:
                    raise TypeError(f"{name}: expected state {what} of dtype {dt}, got "
                                    f"{h.dtype}")
                states.append(h if batched else h.unsqueeze(0))
        return x, states, batched

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s


class RNNCell(RNNCellBase):
    """One step of an Elman RNN: ``h' = φ(W_ih x + b_ih + W_hh h + b_hh)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r} (expected "
                             "'tanh' or 'relu')")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), batched = self._prepare(input, hx, 1)
        out = F.rnn_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                         self.nonlinearity)
        return out if batched else out.squeeze(0)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTMCell(RNNCellBase):
    """One LSTM step; returns ``(h', c')``."""

    gates = 4

    def forward(self, input: Tensor, hx=None) -> tuple[Tensor, Tensor]:
        x, (h, c), batched = self._prepare(input, hx, 2)
        h1, c1 = F.lstm_cell(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih,
                             self.bias_hh)
        return (h1, c1) if batched else (h1.squeeze(0), c1.squeeze(0))


class GRUCell(RNNCellBase):
    """One GRU step; returns ``h'``."""

    gates = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), batched = self._prepare(input, hx, 1)
        out = F.gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return out if batched else out.squeeze(0)


# ---------------------------------------------------------------------- diagnostic
def bptt_gradient_norms(module: RNNBase, input: Tensor, loss_fn, hx=None) -> np.ndarray:
    r"""``‖∂L/∂h_t‖`` for every step ``t`` of the last layer: the vanishing-gradient picture.

    Runs ``module`` (a unidirectional :class:`RNN`, :class:`LSTM` or :class:`GRU`) on one
    batch with its last layer unrolled step by step, computes ``L = loss_fn(output)``
    (``output`` shaped as the module returns it) and returns the Frobenius norm, over the
    batch and the hidden units, of the *total* gradient reaching each hidden state ``h_t``
    — through the output at ``t`` and through every later step. For a loss on the last step
    only, a tanh RNN shows the geometric decay ``∂L/∂h_t = ∂L/∂h_T ∏ W_hh^T diag(φ')``
    analysed by Bengio, Simard & Frasconi (1994) and Hochreiter (1991); an LSTM's cell path
    keeps it far flatter. Parameters' ``.grad`` are left untouched.
    """
    if not isinstance(module, RNNBase):
        raise TypeError(f"bptt_gradient_norms: expected an RNN, LSTM or GRU module, got "
                        f"{type(module).__name__}")
    if module.bidirectional:
        raise ValueError("bptt_gradient_norms: expected a unidirectional module (a "
                         "bidirectional state has no single time direction)")
    module._check_input(input)
    batched = input.ndim == 3
    x = input if batched else input.unsqueeze(1)
    if batched and module.batch_first:
        x = x.transpose(0, 1)
    T, B = x.shape[0], x.shape[1]
    states = module._states(hx, batched, B)
    L = module.num_layers
    for layer in range(L - 1):                # the lower layers run fused
        w = [getattr(module, n) for n in module._flat_names[layer]]
        x = module._scan(x, [s[layer] for s in states], w, None, False)[0]
        if module.dropout and module.training:
            x = F.dropout(x, module.dropout, True)
    w = [getattr(module, n) for n in module._flat_names[L - 1]]
    b = w[2:] if module.bias else [None, None]
    st = [s[L - 1] for s in states]
    hs = []
    for t in range(T):                        # the last layer one step at a time
        xt = x[t]
        if module.mode == "LSTM":
            st = list(F.lstm_cell(xt, st[0], st[1], w[0], w[1], *b))
        elif module.mode == "GRU":
            st = [F.gru_cell(xt, st[0], w[0], w[1], *b)]
        else:
            nl = "relu" if module.mode == "RNN_RELU" else "tanh"
            st = [F.rnn_cell(xt, st[0], w[0], w[1], *b, nonlinearity=nl)]
        hs.append(st[0])
    out = F.stack(hs, 0)
    if not batched:
        out = out.squeeze(1)
    elif module.batch_first:
        out = out.transpose(0, 1)
    loss = loss_fn(out)
    grads = _autograd_grad(loss, hs)
    return np.array([0.0 if g is None else float(np.linalg.norm(g.data)) for g in grads])
