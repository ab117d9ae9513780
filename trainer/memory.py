"""GPU memory a LoRA run of the default base (Llama-3 8B) needs, computed from its shape.

Computed, not measured: no GPU was at hand. The model: weights + LoRA state + saved activations
+ the logits of one batch + the CUDA context. Activation bytes count only what autograd keeps
for a frozen base with LoRA (a frozen linear layer keeps none of its input), with PyTorch's
memory-efficient SDPA kernel (no seq x seq scores kept). Rendered into README.md by
`python -m tests.deploy.trainer_docs --update README.md`.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class ModelShape:
    """meta-llama/Meta-Llama-3-8B-Instruct's config.json."""

    hidden: int = 4096
    intermediate: int = 14336
    layers: int = 32
    heads: int = 32
    kv_heads: int = 8
    vocab: int = 128_256

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    @property
    def linear_params(self) -> int:
        """The decoder layers' projections: the parameters 4-bit quantisation applies to."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        per_layer = h * h * 2 + h * kv * 2 + h * i * 3  # q, o; k, v; gate, up, down
        return per_layer * self.layers

    @property
    def other_params(self) -> int:
        """Embeddings and the (untied) output head, plus the norms: never quantised."""
        return 2 * self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def lora_params(self, r: int) -> int:
        """LoRA on q_proj and v_proj (the default): r x (in + out) each."""
        return r * ((self.hidden + self.hidden) + (self.hidden + self.kv_dim)) * self.layers


LLAMA3_8B = ModelShape()
LORA_R = 16
BATCH = 4  # --per-device-train-batch-size
TYPICAL_TOKENS = 160  # longest prompt + answer of a batch of the shipped data (~4 chars/token)
MAX_TOKENS = 512  # --max-seq-length
NF4_BYTES = 0.5 + (8 / 64 + 32 / (64 * 256)) / 8  # 4 bits + double-quantised absmax per 64
ADAM_STATE_BYTES = 16  # fp32 LoRA weight, gradient and two moments per trainable parameter
# Saved per token and layer, in units of hidden_size elements: two RMSNorm fp32 inputs (2 x 2
# bf16-equivalents), LoRA dropout input + mask on q and v (2 x 1.5), SDPA's q, k, v, output
# (1 + 2 x kv/h + 1), SiLU input, its output and up_proj's output (3 x intermediate/hidden).
CHECKPOINT_UNITS = 1.0  # with checkpointing only each layer's input (bf16) stays
CUDA_CONTEXT_GB = 1.0  # context, cuBLAS workspaces and allocator slack
# Logits for the loss: bf16 logits, their fp32 copy, fp32 log-softmax and the bf16 gradient.
LOGIT_BYTES_PER_ENTRY = 2 + 4 + 4 + 2
GPU_SIZES_GB = (16, 24, 40, 48, 80)


def activation_units(shape: ModelShape) -> float:
    kv = shape.kv_dim / shape.hidden
    return 4 + 3 + (2 + 2 * kv) + 3 * shape.intermediate / shape.hidden


@dataclass(frozen=True)
class Variant:
    flags: str
    weight_bytes: float  # per parameter of the quantisable layers
    other_bytes: float  # per parameter of embeddings, head and norms
    activation_bytes: int  # per element
    checkpointing: bool


VARIANTS = (
    Variant("`--dtype fp32`", 4, 4, 4, False),
    Variant("`--dtype bf16` (auto on Ampere and newer; fp16 the same)", 2, 2, 2, False),
    Variant("`--dtype bf16 --gradient-checkpointing`", 2, 2, 2, True),
    # prepare_model_for_kbit_training casts what is not quantised to fp32.
    Variant("`--load-in-4bit`", NF4_BYTES, 4, 2, False),
    Variant("`--load-in-4bit --gradient-checkpointing`", NF4_BYTES, 4, 2, True),
)


@dataclass(frozen=True)
class Estimate:
    variant: Variant
    weights_gb: float
    typical_gb: float
    worst_gb: float



def smallest_gpu(gb: float) -> str:
    size = next((size for size in GPU_SIZES_GB if gb <= size), None)
    return f"{size} GB" if size else f"> {GPU_SIZES_GB[-1]} GB"


def estimate(variant: Variant, shape: ModelShape = LLAMA3_8B) -> Estimate:
    weights = shape.linear_params * variant.weight_bytes + shape.other_params * variant.other_bytes
    lora = shape.lora_params(LORA_R) * ADAM_STATE_BYTES
    per_layer = activation_units(shape) * shape.hidden * variant.activation_bytes

    def total(tokens: int) -> float:
        if variant.checkpointing:
            kept = CHECKPOINT_UNITS * shape.hidden * variant.activation_bytes * shape.layers
            activations = tokens * (kept + per_layer)  # plus one layer recomputed at a time
        else:
            activations = tokens * per_layer * shape.layers
        logits = tokens * shape.vocab * LOGIT_BYTES_PER_ENTRY
        return (weights + lora + activations + logits) / GB + CUDA_CONTEXT_GB

    return Estimate(variant, weights / GB, total(BATCH * TYPICAL_TOKENS),
                    total(BATCH * MAX_TOKENS))


def memory_table_markdown() -> str:
    header = ("options (LoRA r=16 on q_proj,v_proj, AdamW)", "weights GB",
              f"total GB, batch {BATCH} x {TYPICAL_TOKENS} tokens",
              f"total GB, batch {BATCH} x {MAX_TOKENS} tokens", "smallest GPU that fits (both)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in VARIANTS:
        e = estimate(variant)
        lines.append(f"| {variant.flags} | {e.weights_gb:.1f} | {e.typical_gb:.1f} | "
                     f"{e.worst_gb:.1f} | {smallest_gpu(e.typical_gb)} / "
                     f"{smallest_gpu(e.worst_gb)} |")
    return "\n".join(lines)
