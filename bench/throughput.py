"""Training throughput: the cp-plan GPT (CompleteP) against a plain GPT with no parameterization.

Both models have the same shape and do the same work per step: forward, backward, AdamW step
(same betas, same implementation flags), on the same batches, in the same process. The plain
GPT below is nanoGPT's architecture written without any parameterization code: one attention
scale (SDPA's default), no residual, embedding or logit multipliers, one init std, two AdamW
groups (decay / no decay). The cp-plan model adds the CompleteP forward multipliers and six
per-group AdamW groups with their own LR, weight decay and ε. Timing alternates between the two
models in rounds and reports the median step time of each, so drift in machine load affects
both alike.

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
    ap.add_argument("--steps", type=int, default=20, help="steps per model per round")
    ap.add_argument("--rounds", type=int, default=7)
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
    fused = device.type == "cuda"
    plain_opt = plain_optimizer(plain, cfg.lr, dict(fused=fused, foreach=None if fused else True))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in plain.parameters())

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len + 1), generator=gen).to(device)
               for _ in range(args.steps)]
    total_steps = args.steps * args.rounds

    def run(model, opt, schedule: bool, round_i: int) -> float:
        """Seconds per step over one round (the cp-plan loop also sets per-group LRs)."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i, b in enumerate(batches):
            if schedule:
                set_lr(opt, lr_multiplier(round_i * args.steps + i, total_steps, 0, "linear"))
            _, loss = model(b[:, :-1], b[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        loss.item()
        return (time.perf_counter() - t0) / len(batches)

    run(ours, ours_opt, True, 0)  # warm-up (allocator, kernels, lazy imports)
    run(plain, plain_opt, False, 0)
    t_ours, t_plain = [], []
    for r in range(args.rounds):
        for name in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
            if name == "ours":
                t_ours.append(run(ours, ours_opt, True, r))
            else:
                t_plain.append(run(plain, plain_opt, False, r))
    tokens = cfg.batch_size * cfg.seq_len
    tps_ours, tps_plain = tokens / statistics.median(t_ours), tokens / statistics.median(t_plain)
    ratio = tps_ours / tps_plain
    print(f"shape: N={cfg.n_embd} L={cfg.n_layer} d_head={cfg.d_head} batch={cfg.batch_size}x{cfg.seq_len} "
          f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"plain GPT        : {tps_plain:10,.0f} tokens/s  (median of {args.rounds} rounds x {args.steps} steps)")
    print(f"cp-plan CompleteP: {tps_ours:10,.0f} tokens/s")
    print(f"ratio cp-plan / plain: {ratio:.3f}  (target >= 0.95)")
    return ratio


if __name__ == "__main__":
    main()
