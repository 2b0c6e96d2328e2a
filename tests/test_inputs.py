"""Every input check at the model's boundary: the message names the tensor, the value, the limit and the fix, and
nothing reaches torch's embedding lookup (which would raise IndexError)."""

import pytest
import torch
from conftest import TINY, load_reference, need_shared

import bertscope
from bertscope import InputError
from bertscope.config import ConfigError


@pytest.fixture(scope="module")
def bert():
    load_reference("bert")
    return bertscope.from_pretrained(TINY / "bert-cls")


@pytest.fixture(scope="module")
def roberta():
    need_shared()
    return bertscope.from_pretrained(TINY / "roberta")


def test_roberta_640_tokens_names_514_rows_the_offset_and_the_fix():
    model = bertscope.from_config("roberta-base", num_hidden_layers=1)
    ids = torch.full((2, 640), 100)
    with pytest.raises(InputError) as e:
        model(input_ids=ids)
    msg = str(e.value)
    assert "640 tokens" in msg and "514 position embeddings" in msg and "first 2 are reserved" in msg
    assert "padding_idx=1" in msg and "positions 514..641" in msg and "Truncate to 512 tokens" in msg
    assert not isinstance(e.value, IndexError)
    model(input_ids=ids[:, :512])  # 512 fits


def test_roberta_padding_does_not_count_against_positions(roberta):
    P = roberta.config.max_position_embeddings            # 130 rows -> 128 tokens
    ids = torch.full((1, P + 5), roberta.config.pad_token_id)
    ids[0, :128] = 7
    out = roberta(input_ids=ids, attention_mask=(ids != 1).long())
    assert out.logits.shape == (1, P + 5, 1000)
    ids[0, 128] = 7
    with pytest.raises(InputError, match="129 tokens; .* at most 128 tokens fit"):
        roberta(input_ids=ids)


def test_bert_sequence_longer_than_positions(bert):
    with pytest.raises(InputError, match=r"input_ids has 129 tokens; this BERT model has 128 position embeddings, "
                                         r"so at most 128 tokens fit .*Truncate to 128 tokens"):
        bert(input_ids=torch.ones(1, 129, dtype=torch.long))


def test_id_beyond_vocabulary_names_position_and_fix(bert):
    ids = torch.ones(2, 9, dtype=torch.long)
    ids[1, 7] = 1000
    with pytest.raises(InputError, match=r"input_ids row 1, position 7 holds id 1000, outside this model's vocabulary "
                                         r"of 1000 ids \(0..999\).*load_tokenizer"):
        bert(input_ids=ids)


def test_negative_id(bert):
    ids = torch.ones(1, 4, dtype=torch.long)
    ids[0, 2] = -1
    with pytest.raises(InputError, match="position 2 holds id -1"):
        bert(input_ids=ids)


def test_segment_beyond_type_vocab(bert, roberta):
    ids = torch.ones(1, 5, dtype=torch.long)
    with pytest.raises(InputError, match=r"token_type_ids row 0, position 4 is 2; this model has type_vocab_size 2 "
                                         r"\(segments 0..1\)"):
        bert(input_ids=ids, token_type_ids=torch.tensor([[0, 0, 1, 1, 2]]))
    with pytest.raises(InputError, match="type_vocab_size 1 .*pass token_type_ids of zeros.*</s></s>"):
        roberta(input_ids=ids, token_type_ids=torch.tensor([[0, 0, 1, 1, 1]]))


def test_mask_shape_mismatch(bert):
    ids = torch.ones(3, 17, dtype=torch.long)
    with pytest.raises(InputError, match=r"attention_mask has shape \(3, 16\) but input_ids has shape \(3, 17\); "
                                         r"expected \(3, 17\) .* or a per-example \(3, 17, 17\) mask"):
        bert(input_ids=ids, attention_mask=torch.ones(3, 16))


def test_mask_values_must_be_zero_or_one(bert):
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(InputError, match="expected 0/1 values"):
        bert(input_ids=ids, attention_mask=torch.tensor([[0.0, -10000.0, 0.0, 0.0]]))


def test_token_type_shape_mismatch(bert):
    with pytest.raises(InputError, match=r"token_type_ids has shape \(1, 3\) but input_ids has shape \(1, 4\)"):
        bert(input_ids=torch.ones(1, 4, dtype=torch.long), token_type_ids=torch.zeros(1, 3, dtype=torch.long))


def test_position_ids_validated_like_ids(bert):
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(InputError, match=r"position_ids row 0, position 3 is 128; this BERT model has 128 position "
                                         r"embeddings \(ids 0..127\)"):
        bert(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 128]]))
    with pytest.raises(InputError, match=r"position_ids has shape \(1, 3\)"):
        bert(input_ids=ids, position_ids=torch.tensor([[0, 1, 2]]))


def test_float_ids_and_wrong_rank(bert):
    with pytest.raises(InputError, match="dtype torch.float32; ids must be integers"):
        bert(input_ids=torch.ones(1, 4))
    with pytest.raises(InputError, match=r"input_ids has shape \(4,\); expected \(batch, length\)"):
        bert(input_ids=torch.ones(4, dtype=torch.long))


def test_classification_label_beyond_num_labels(bert):
    with pytest.raises(InputError, match=r"the label of sequence 1 is 3 but this classifier has num_labels 3"):
        bert(input_ids=torch.ones(2, 4, dtype=torch.long), labels=torch.tensor([0, 3]))


def test_mlm_label_outside_vocabulary(roberta):
    labels = torch.full((1, 4), -100)
    labels[0, 1] = 5000
    with pytest.raises(InputError, match="masked-LM labels must be -100 .* or a token id in 0..999"):
        roberta(input_ids=torch.ones(1, 4, dtype=torch.long) * 5, labels=labels)


def test_bad_cu_seqlens(bert):
    ids = torch.ones(10, dtype=torch.long)
    with pytest.raises(InputError, match="must start at 0 and end at 10"):
        bert(input_ids=ids, cu_seqlens=torch.tensor([0, 4, 9]))
    with pytest.raises(InputError, match="not increasing at sequence 1"):
        bert(input_ids=ids, cu_seqlens=torch.tensor([0, 4, 4, 10]))
    with pytest.raises(InputError, match="packed sequence .*|has 129 tokens"):
        bert(input_ids=torch.ones(130, dtype=torch.long), cu_seqlens=torch.tensor([0, 1, 130]))


def test_hidden_size_not_divisible_by_heads():
    with pytest.raises(ConfigError, match=r"hidden_size 770 is not divisible by num_attention_heads 12.*Choose a head "
                                          r"count that divides 770"):
        bertscope.Config(family="bert", vocab_size=100, hidden_size=770, num_hidden_layers=2, num_attention_heads=12,
                         intermediate_size=3072)
    assert issubclass(ConfigError, ValueError)
