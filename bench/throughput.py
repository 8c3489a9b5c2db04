"""Training throughput: the cp-plan GPT (CompleteP) against a plain GPT with no parameterization.

Both models have the same shape and do the same work per step: forward, backward, AdamW step
(same betas, same implementation flags), on the same batches, in the same process. The plain
GPT below is nanoGPT's architecture written without any parameterization code: one attention
scale (SDPA's default), no residual, embedding or logit multipliers, one init std, two AdamW
groups (decay / no decay). The cp-plan model adds the CompleteP forward multipliers and six
per-group AdamW groups with their own LR, weight decay and ε. Timing interleaves the two models
step by step and reports median step times (wall and process CPU time), so drift in machine load
affects both alike.

    python bench/throughput.py                       # 4-layer, 64-wide (the README demo shape)
    python bench/throughput.py --n-embd 256 --n-layer 8 --threads 2

Prints tokens/s of each and the ratio cp-plan / plain (target ≥ 0.95 on CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import TrainConfig  # noqa: E402
from trainer.model import GPT  # noqa: E402
from trainer.optim import build_optimizer, lr_multiplier, set_lr  # noqa: E402


# ----------------------------------------------------------------------------- plain baseline
class PlainAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class PlainBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = PlainAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, n_embd: int, n_layer: int, n_head: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(seq_len, n_embd)
        self.blocks = nn.ModuleList([PlainBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def plain_optimizer(model: nn.Module, lr: float, opt_flags: dict) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), **opt_flags)


# ----------------------------------------------------------------------------- timing
def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--d-head", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200, help="timed steps per model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    # Default base shape (256, 2): m_N, m_L ≠ 1, so every multiplier is a real one.
    cfg = TrainConfig(parameterization="completep", n_embd=args.n_embd, n_layer=args.n_layer,
                      d_head=args.d_head, seq_len=args.seq_len, batch_size=args.batch_size,
                      device=args.device)
    torch.manual_seed(0)
    ours = GPT.from_config(cfg).to(device)
    ours_opt = build_optimizer(ours, cfg.rules(), (cfg.beta1, cfg.beta2), device.type)
    plain = PlainGPT(cfg.vocab_size, cfg.seq_len, cfg.n_embd, cfg.n_layer, cfg.n_head).to(device)
    # The same AdamW implementation as cp-plan's build_optimizer picked, so only the groups differ.
    plain_opt = plain_optimizer(plain, cfg.lr, dict(fused=True) if ours_opt.defaults["fused"]
                                else dict(foreach=True))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in plain.parameters())

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len + 1), generator=gen).to(device)
               for _ in range(8)]
    total_steps = args.steps

    def step(model, opt, i: int, schedule: bool) -> tuple[float, float]:
        """(wall s, process CPU s) of one training step; the cp-plan loop also sets per-group LRs."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        if schedule:
            set_lr(opt, lr_multiplier(i, total_steps, 0, "linear"))
        b = batches[i % len(batches)]
        _, loss = model(b[:, :-1], b[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # synchronizes a GPU
        return time.perf_counter() - w0, time.process_time() - c0

    for i in range(5):  # warm-up: allocator, kernels, lazy imports
        step(ours, ours_opt, i, True)
        step(plain, plain_opt, i, False)
    # Interleave the two models step by step (order alternating), so a change in machine load
    # hits both alike; medians ignore the steps during which the process was descheduled.
    t_ours, t_plain = [], []
    for i in range(args.steps):
        if i % 2 == 0:
            t_ours.append(step(ours, ours_opt, i, True))
            t_plain.append(step(plain, plain_opt, i, False))
        else:
            t_plain.append(step(plain, plain_opt, i, False))
            t_ours.append(step(ours, ours_opt, i, True))
    tokens = cfg.batch_size * cfg.seq_len

    def tps(times, k):
        return tokens / statistics.median(t[k] for t in times)

    ratio = tps(t_ours, 0) / tps(t_plain, 0)
    print(f"shape: N={cfg.n_embd} L={cfg.n_layer} d_head={cfg.d_head} batch={cfg.batch_size}x{cfg.seq_len} "
          f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}, "
          f"median of {args.steps} interleaved steps each")
    print(f"plain GPT        : {tps(t_plain, 0):10,.0f} tokens/s wall   {tps(t_plain, 1):10,.0f} tokens/CPU-s")
    print(f"cp-plan CompleteP: {tps(t_ours, 0):10,.0f} tokens/s wall   {tps(t_ours, 1):10,.0f} tokens/CPU-s")
    print(f"ratio cp-plan / plain: {ratio:.3f} wall, {tps(t_ours, 1) / tps(t_plain, 1):.3f} CPU time"
          "  (target >= 0.95)")
    return ratio


if __name__ == "__main__":
    main()
