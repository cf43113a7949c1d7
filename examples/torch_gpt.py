"""A small GPT-style character model (examples/chardata.py's text) trained with torch's
parallel styles over the "ringrt" backend.

    ringrun -n 2 examples/torch_gpt.py                   # DDP
    ringrun -n 4 examples/torch_gpt.py                   # 2x2 mesh: FSDP2 over "dp" x
                                                         #   tensor + sequence parallel over "tp"
    ringrun -n 2 examples/torch_gpt.py --generate 64     # then tensor-parallel generation, TP=2
    ringrun -n 4 examples/torch_gpt.py --backend gloo    # the same script over gloo

A decoder-only transformer (token + position embeddings, pre-norm blocks of causal
self-attention and a GELU MLP, a linear head), written so tensor parallelism needs no change
to it: attention views its projections as ``(batch, time, heads_here, head_dim)``, so a
column-sharded projection simply holds fewer heads. :func:`tensor_parallel` is the
Megatron plan (query/key/value and the MLP's first layer split by columns, the output
projections by rows: one all-reduce after attention and one after the MLP), and with
``sequence_parallel`` the norms and the residual stream are split along the sequence
(all-gather before attention and MLP, reduce-scatter after). No ringrt API beyond
``import ringrt.torch`` and the backend's name.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))   # chardata.py as a script
from chardata import CharCorpus  # noqa: E402

import ringrt.torch  # noqa: E402,F401 - registers the "ringrt" backend


@dataclass(frozen=True)
class GPTConfig:
    """The model's shape: ``vocab`` characters, ``context`` positions, ``layers`` blocks of
    width ``dim`` with ``heads`` attention heads."""

    vocab: int
    context: int = 32
    dim: int = 64
    heads: int = 4
    layers: int = 2


class Embed(nn.Module):
    """Token plus position embeddings."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab, cfg.dim)
        self.positions = nn.Embedding(cfg.context, cfg.dim)

    def forward(self, idx):
        return self.tokens(idx) + self.positions(torch.arange(idx.shape[1]))


class Attention(nn.Module):
    """Causal self-attention; the heads a rank holds follow from its projections' width."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.head_dim = cfg.dim // cfg.heads
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(cfg.dim, cfg.dim, bias=False)
                                              for _ in range(4))

    def forward(self, x):
        b, t = x.shape[0], x.shape[1]
        q, k, v = (w(x).view(b, t, -1, self.head_dim).transpose(1, 2)
                   for w in (self.wq, self.wk, self.wv))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.w2 = nn.Linear(4 * cfg.dim, cfg.dim)

    def forward(self, x):
        return self.w2(F.gelu(self.w1(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(cfg.dim), Attention(cfg)
        self.norm2, self.mlp = nn.LayerNorm(cfg.dim), MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    def forward(self, idx):
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def build(cfg: GPTConfig, seed: int = 0) -> GPT:
    """The same initial model on every rank (and in every run with the same seed)."""
    torch.manual_seed(seed)
    return GPT(cfg)


def tensor_parallel(model: GPT, tp_mesh, sequence_parallel: bool = False) -> GPT:
    """Split ``model`` over ``tp_mesh`` (a 1-D DeviceMesh) with ``parallelize_module``.

    The head count and MLP width must divide by the mesh's size.
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        PrepareModuleOutput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    cfg, size = model.cfg, tp_mesh.size()
    if cfg.heads % size:
        raise ValueError(f"tensor_parallel: {cfg.heads} heads do not split over {size} ranks")
    row = RowwiseParallel(output_layouts=Shard(1)) if sequence_parallel else RowwiseParallel()
    block_plan = {"attn.wq": ColwiseParallel(), "attn.wk": ColwiseParallel(),
                  "attn.wv": ColwiseParallel(), "attn.wo": row,
                  "mlp.w1": ColwiseParallel(), "mlp.w2": row}
    if sequence_parallel:
        gather = PrepareModuleInput(input_layouts=(Shard(1),),
                                    desired_input_layouts=(Replicate(),))
        block_plan.update({"norm1": SequenceParallel(), "norm2": SequenceParallel(),
                           "attn": gather, "mlp": gather})
    for block in model.blocks:
        parallelize_module(block, tp_mesh, block_plan)
    if sequence_parallel:
        parallelize_module(model, tp_mesh, {
            "embed": PrepareModuleOutput(output_layouts=(Replicate(),),
                                         desired_output_layouts=(Shard(1),)),
            "norm": SequenceParallel(),
            "head": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
        })
    return model


def batches(corpus: CharCorpus, cfg: GPTConfig, batch: int, steps: int, seed: int = 1):
    """``steps`` global batches of (inputs, targets), the same on every rank: targets are the
    inputs shifted by one character."""
    codes = torch.from_numpy(corpus.split("train").astype("int64"))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(codes) - cfg.context - 1, (batch,), generator=generator)
        window = torch.stack([codes[s:s + cfg.context + 1] for s in starts.tolist()])
        yield window[:, :-1], window[:, 1:]


def loss_of(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def parallelize(model: GPT, backend: str, world: int):
    """(model, the rows of each global batch this rank trains on, a description): DDP at
    world 2 (or any world not 4), FSDP2 x tensor + sequence parallel on a 2x2 mesh at 4."""
    from torch.distributed.device_mesh import init_device_mesh

    rank = dist.get_rank()
    if world == 4:
        from torch.distributed.fsdp import fully_shard

        override = {} if backend == "ringrt" else {"dp": backend, "tp": backend}
        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"),
                                backend_override=override)
        tensor_parallel(model, mesh["tp"], sequence_parallel=True)
        for block in model.blocks:
            fully_shard(block, mesh=mesh["dp"])
        fully_shard(model, mesh=mesh["dp"])
        dp_rank = mesh["dp"].get_local_rank()
        return model, (dp_rank, 2), "FSDP2 over dp x tensor/sequence parallel over tp (2x2)"
    from torch.nn.parallel import DistributedDataParallel as DDP

    group = None if backend == "ringrt" else dist.new_group(backend=backend)
    return DDP(model, process_group=group), (rank, world), f"DDP over {world} ranks"


@torch.no_grad()
def generate(model: GPT, prompt: torch.Tensor, tokens: int) -> torch.Tensor:
    """Greedy decoding of ``tokens`` characters after ``prompt`` (1-D), each from the last
    ``context`` characters (no cache: every token is one full forward)."""
    out = prompt.clone()
    for _ in range(tokens):
        logits = model(out[-model.cfg.context:][None])
        out = torch.cat([out, logits[0, -1].argmax().reshape(1)])
    return out


def tokens_per_second(model: GPT, prompt: torch.Tensor, tokens: int) -> tuple[float, str]:
    """Time :func:`generate` (after one warm-up token); barriers around it when distributed."""
    generate(model, prompt, 1)
    if dist.is_initialized():
        dist.barrier()
    started = time.perf_counter()
    out = generate(model, prompt, tokens)
    elapsed = time.perf_counter() - started
    return tokens / elapsed, out


@click.command()
@click.option("--backend", default="ringrt", show_default=True, help="ringrt or gloo")
@click.option("--steps", default=200, show_default=True)
@click.option("--batch-size", default=32, show_default=True, help="global batch")
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--dim", default=64, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--generate", "gen_tokens", default=0, help="then generate this many characters "
              "with the model split over 2 ranks (tensor parallel)")
@click.option("--log-json", type=click.Path(), help="rank 0 writes the losses here")
def main(backend, steps, batch_size, lr, dim, layers, gen_tokens, log_json):
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    corpus = CharCorpus.load()
    cfg = GPTConfig(vocab=corpus.vocab_size, dim=dim, layers=layers)
    model, (part, parts), how = parallelize(build(cfg), backend, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    if rank == 0:
        print(f"GPT ({sum(p.numel() for p in build(cfg).parameters()):,} parameters), "
              f"{how}, over {backend}", flush=True)
    losses = []
    for step, (x, y) in enumerate(batches(corpus, cfg, batch_size, steps)):
        rows = slice(part * batch_size // parts, (part + 1) * batch_size // parts)
        loss = loss_of(model, x[rows], y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
        if rank == 0 and (step % 20 == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {losses[-1]:.3f}", flush=True)
    if rank == 0 and log_json:
        Path(log_json).write_text(json.dumps({"losses": losses, "how": how}))
    if gen_tokens and world >= 2:
        from torch.distributed.device_mesh import init_device_mesh

        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v
                 for k, v in model.state_dict().items()}
        plain = build(cfg)
        plain.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        mesh = init_device_mesh("cpu", (world // 2, 2), mesh_dim_names=("rep", "tp"),
                                backend_override={} if backend == "ringrt" else
                                {"rep": backend, "tp": backend})
        tp_model = tensor_parallel(plain, mesh["tp"]).eval()
        prompt = torch.from_numpy(corpus.split("val")[:cfg.context].astype("int64"))
        rate, out = tokens_per_second(tp_model, prompt, gen_tokens)
        if rank == 0:
            print(f"TP=2 generation over {backend}: {rate:.0f} tokens/s\n"
                  f"{corpus.decode(out)!r}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
