"""A small character-level GPT and a short training run on a text file.

A plain PyTorch script written for this project's tests in the usual shape of such models:
token and position embeddings, pre-LayerNorm transformer blocks with causal self-attention (explicit
query/key/value projections; either ``F.scaled_dot_product_attention(is_causal=True)`` or a
registered lower-triangular mask), a GELU MLP, the output head tied to the token embedding,
AdamW with decay and no-decay parameter groups, gradient clipping and a warmup-then-cosine
learning rate, and sampling with temperature and top-k."""

import argparse
import math
import random
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int = 65
    context: int = 64
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    dropout: float = 0.1
    use_sdpa: bool = True  # else: softmax over scores with a registered causal mask


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0
        self.n_heads = cfg.n_heads
        self.use_sdpa = cfg.use_sdpa
        self.dropout = cfg.dropout
        self.query = nn.Linear(cfg.d_model, cfg.d_model)
        self.key = nn.Linear(cfg.d_model, cfg.d_model)
        self.value = nn.Linear(cfg.d_model, cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.out_drop = nn.Dropout(cfg.dropout)
        causal = torch.tril(torch.ones(cfg.context, cfg.context, dtype=torch.bool))
        self.register_buffer("causal", causal.view(1, 1, cfg.context, cfg.context),
                             persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_heads
        q = self.query(x).view(B, T, self.n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, self.n_heads, hs).transpose(1, 2)
        v = self.value(x).view(B, T, self.n_heads, hs).transpose(1, 2)
        if self.use_sdpa:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
            scores = scores.masked_fill(~self.causal[:, :, :T, :T], float("-inf"))
            weights = self.attn_drop(F.softmax(scores, dim=-1))
            y = weights @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.out_drop(self.out(y))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.down = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.ff(self.norm2(x))
        return x


class CharGPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # the head shares the token embedding
        self.apply(self._init_weights)
        n = sum(p.numel() for p in self.parameters())
        print(f"CharGPT: {n} parameters")

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.cfg.context, f"sequence of {T} is longer than the context"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if targets is None:
            return self.head(x[:, -1:, :]), None  # only the last position is needed
        logits = self.head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def configure_optimizers(self, weight_decay, lr, betas):
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]  # matrices and embeddings
        no_decay = [p for p in params.values() if p.dim() < 2]  # biases and norm scales
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        print(f"decayed: {sum(p.numel() for p in decay)} values in {len(decay)} tensors; "
              f"not decayed: {sum(p.numel() for p in no_decay)} in {len(no_decay)}")
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        for _ in range(max_new_tokens):
            window = idx[:, -self.cfg.context:]
            logits, _ = self(window)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                kth, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < kth[:, [-1]]] = float("-inf")
            probs = F.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, nxt), dim=1)
        return idx


def lr_at(it, args):
    """Linear warmup to ``args.lr``, then a cosine down to ``args.min_lr``."""
    if it < args.warmup:
        return args.lr * (it + 1) / args.warmup
    if it >= args.max_iters:
        return args.min_lr
    progress = (it - args.warmup) / max(1, args.max_iters - args.warmup)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.lr - args.min_lr)


def get_batch(data, batch_size, context, rng):
    starts = [rng.randrange(len(data) - context - 1) for _ in range(batch_size)]
    x = torch.stack([data[i:i + context] for i in starts])
    y = torch.stack([data[i + 1:i + 1 + context] for i in starts])
    return x, y


@torch.no_grad()
def estimate_loss(model, data, args, rng):
    model.eval()
    losses = []
    for _ in range(args.eval_iters):
        x, y = get_batch(data, args.batch_size, args.context, rng)
        _, loss = model(x, y)
        losses.append(loss.item())
    model.train()
    return sum(losses) / len(losses)


def main(argv=None):
    parser = argparse.ArgumentParser(description="train a character-level GPT")
    parser.add_argument("--data", required=True, help="a UTF-8 text file")
    parser.add_argument("--chars", type=int, default=0, help="use only its first N characters")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--mask", action="store_true",
                        help="attention through the registered mask instead of SDPA")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--eval-iters", type=int, default=20)
    parser.add_argument("--log-interval", type=int, default=100)
    parser.add_argument("--sample-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    if args.chars:
        text = text[:args.chars]
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    itos = dict(enumerate(chars))
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n_train = int(0.9 * len(data))
    train_data, val_data = data[:n_train], data[n_train:]

    cfg = ModelConfig(vocab_size=len(chars), context=args.context, n_layers=args.layers,
                      n_heads=args.heads, d_model=args.d_model, dropout=args.dropout,
                      use_sdpa=not args.mask)
    model = CharGPT(cfg)
    optimizer = model.configure_optimizers(args.weight_decay, args.lr, (0.9, 0.95))

    train_losses = []
    for it in range(args.max_iters):
        lr = lr_at(it, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, args.batch_size, args.context, rng)
        _, loss = model(x, y)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_losses.append(loss.item())
        if it % args.log_interval == 0 or it == args.max_iters - 1:
            print(f"iter {it}: loss {loss.item():.6f}, lr {lr:.3e}")
    val_loss = estimate_loss(model, val_data, args, rng)
    print(f"validation loss {val_loss:.6f}")

    model.eval()
    start = torch.tensor([[stoi[text[0]]]], dtype=torch.long)
    out = model.generate(start, args.sample_tokens, temperature=args.temperature,
                         top_k=args.top_k)
    sample = "".join(itos[int(i)] for i in out[0].tolist())
    print(sample)
    return model, train_losses, val_loss, sample


if __name__ == "__main__":
    main()
