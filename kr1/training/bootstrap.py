"""Bootstrap the embedded default's model: a local BPE tokenizer and a tiny Qwen2-style LM.

    bootstrap(world, out, seed=0, size="small", index=index, sft_steps=300)
    python -m pipelines.bootstrap_model --world W --out M --index I --sft-steps 300   # the same, as a command

Trains a byte-level BPE tokenizer on the world's corpus and questions with the
`tokenizers` library (protocol tags such as <search> are single tokens), wraps it as a
transformers tokenizer with a ChatML chat template, and saves a randomly initialised
Qwen2 causal LM sized for 2 CPU cores, optionally warm-started on gold single-hop
trajectories (`sft_steps`, see kr1/training/warm_start.py), in Hugging Face format (loadable by
`AutoModelForCausalLM.from_pretrained` and by vLLM). Deterministic for a seed; no
downloads.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from kr1.atomic_write import atomic_directory
from kr1.data import DataError, load_questions
from kr1.errors import UserError
from kr1.retrieval.scoring import search_index
from kr1.rollout.protocol import INVALID_FEEDBACK, PROMPT_TEMPLATES, PROTOCOL_TAGS, THINK_CLOSE, THINK_OPEN
from kr1.training.warm_start import MaskedSequence, gold_trajectory, multihop_trajectory, train_sft

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# bump when the tokenizer, model or warm start change, so caches keyed by it rebuild
BOOTSTRAP_VERSION = 3
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# name -> (hidden, layers, heads, kv heads, intermediate); head dim 64 suits vLLM's CPU kernels
MODEL_SIZES = {
    "tiny": (128, 2, 2, 1, 384),
    "small": (256, 4, 4, 2, 768),
}


def world_texts(world: Path) -> Iterable[str]:
    """Everything the tokenizer should compress well: the protocol prose and the world's training texts (its
    training and single-hop questions, their answers and the passages they name). Held-out entities stay out:
    a merge made only of their names would be a token whose embedding no training step ever touches."""
    yield from PROMPT_TEMPLATES.values()
    yield INVALID_FEEDBACK
    named: set[str] = set()
    for name in ("train.jsonl", "single_hop.jsonl"):
        path = world / name
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                named.update(row.get("supporting_titles", []))
                named.update(row.get("golden_answers", []))
                yield " ".join([str(row.get("problem", "")), *row.get("golden_answers", [])])
    with open(world / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("title") in named:
                yield f"{row['title']} {row.get('text', '')}"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with ChatML specials and the protocol tags as whole tokens."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tags = [*PROTOCOL_TAGS, THINK_OPEN, THINK_CLOSE]
    core.add_tokens([AddedToken(t, normalized=False, special=False) for t in tags])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=IM_END, pad_token=PAD,
                                        bos_token=None, unk_token=None)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerFast, size: str, seed: int,
                max_positions: int = 2048) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM over `tokenizer`'s vocabulary."""
    hidden, layers, heads, kv_heads, intermediate = MODEL_SIZES[size]
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.float().eval()


def warm_start(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, world: Path, index: Path,
               steps: int, seed: int, top_k: int = 3, max_passage_chars: int = 600, template: str = "compact",
               retry_fraction: float = 0.3, lr: float = 1e-2, progress: bool = True,
               follow_fraction: float = 0.0, multihop_fraction: float = 0.0) -> list[float]:
    """Supervised fine-tuning on gold single-hop trajectories read through the real index; `follow_fraction` of
    those whose answer has its own passage look that name up before answering; `multihop_fraction` of all
    examples are multi-hop demonstrations on training questions (`multihop_demonstrations`)."""
    questions = load_questions(world / "single_hop.jsonl")
    entities = [q.supporting_titles[0] for q in questions]
    hits = search_index(index, entities, top_k + 3)
    # the most confusable other passage is the "wrong first search" of a self-correcting example
    wrong = [next((h.title for h in found if h.title != entity), entity) for entity, found in zip(entities, hits)]
    wrong_hits = search_index(index, wrong, top_k)
    answer_hits = search_index(index, [q.golden_answers[0] for q in questions], top_k)
    rng = random.Random(seed)
    examples = []
    for q, entity, found, w, w_found, a_found in zip(questions, entities, hits, wrong, wrong_hits, answer_hits):
        if all(h.title != q.supporting_titles[-1] for h in found[:top_k]):
            continue  # the retriever does not surface the evidence: no gold trajectory to imitate
        missed = w != entity and all(h.title != entity for h in w_found)
        miss = (w, w_found) if missed and rng.random() < retry_fraction else None
        # a name with a passage of its own (a person, a film) can be looked up; a year or a city's country cannot
        named = bool(a_found) and a_found[0].title == q.golden_answers[0] and len(q.supporting_titles) == 1
        # follow_fraction 0 draws nothing: the warm start stays the one it was before the option existed
        follow = a_found if follow_fraction > 0 and miss is None and named and rng.random() < follow_fraction else None
        examples.append(gold_trajectory(tokenizer, q, found[:top_k], max_passage_chars, template, miss, follow))
    if multihop_fraction > 0:
        wanted = round(len(examples) * multihop_fraction / (1.0 - multihop_fraction))
        examples += multihop_demonstrations(tokenizer, world, index, wanted, seed, top_k, max_passage_chars, template)
    threads = torch.get_num_threads()
    # matrices this small run 3x faster on one thread than on two (measured: 0.27 vs 0.93 s/step)
    torch.set_num_threads(1)
    try:
        with tqdm(total=steps, desc="warm start (SFT)", disable=not progress) as bar:
            return train_sft(model, examples, steps, tokenizer.pad_token_id, lr=lr, seed=seed, progress=bar)
    finally:
        torch.set_num_threads(threads)


# the multi-hop types a demonstration can walk in order, one search per supporting title (a bridge comparison needs
# four passages, more than a demonstration of the default four turns holds)
DEMONSTRATED_TYPES = ("compositional", "inference", "comparison")


def multihop_demonstrations(tokenizer: PreTrainedTokenizerFast, world: Path, index: Path, count: int, seed: int,
                            top_k: int = 3, max_passage_chars: int = 600,
                            template: str = "compact") -> list[MaskedSequence]:
    """Up to `count` multi-hop demonstrations on the world's training questions (training-region entities only),
    each hop's passages read through the real index; a question whose supporting passage a search for its
    title does not surface is left out."""
    rng = random.Random(seed + 17)
    questions = [q for q in load_questions(world / "train.jsonl")
                 if q.type in DEMONSTRATED_TYPES and len(q.supporting_titles) == 2]
    rng.shuffle(questions)
    questions = questions[:count]
    titles = sorted({t for q in questions for t in q.supporting_titles})
    found = dict(zip(titles, search_index(index, titles, top_k)))
    demos = []
    for q in questions:
        hops = [found[t] for t in q.supporting_titles]
        if all(any(h.title == t for h in hits) for t, hits in zip(q.supporting_titles, hops)):
            demos.append(multihop_trajectory(tokenizer, q, hops, max_passage_chars, template))
    return demos


def bootstrap(world: Path, out: Path, seed: int = 0, size: str = "small", vocab_size: int = 3072,
              index: Path | None = None, sft_steps: int = 0, progress: bool = True,
              follow_fraction: float = 0.0, multihop_fraction: float = 0.0, lr: float = 1e-2,
              sft_world: Path | None = None) -> Path:
    """Write tokenizer and model (warm-started when `sft_steps` > 0) into `out` atomically. The warm start reads
    `sft_world` (default: `world`) through `index`, an index of that world: a practice world of other entities
    teaches the skills (read, copy a name, search again) without the run's own entities."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r} (choose from {', '.join(MODEL_SIZES)})")
    if not (world / "corpus.jsonl").is_file():
        raise DataError(f"{world}: no corpus.jsonl (generate it with python -m pipelines.synthetic_world)")
    if sft_steps > 0 and index is None:
        raise UserError("the warm start reads passages through an index: pass --index")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar covers the warm start; saving needs none
    sft_world = sft_world or world
    if not (sft_world / "train.jsonl").is_file():
        raise DataError(f"{sft_world}: no train.jsonl (generate it with python -m pipelines.synthetic_world)")
    tokenizer = train_tokenizer(world_texts(sft_world), vocab_size)  # the texts the model trains on
    model = build_model(tokenizer, size, seed)
    if sft_steps > 0:
        warm_start(model, tokenizer, sft_world, index, sft_steps, seed, progress=progress,  # type: ignore[arg-type]
                   follow_fraction=follow_fraction, multihop_fraction=multihop_fraction, lr=lr)
    with atomic_directory(out) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
    return out
