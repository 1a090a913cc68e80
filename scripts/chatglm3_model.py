#!/usr/bin/env python3
"""ChatGLM3's network rebuilt from THUDM's `modeling_chatglm.py` (December 2023) at the fixtures'
tiny size, for the fixture scripts: its names, its fused projections, its rotary cache, its
`get_masks` (padded queries see every key when there is no past), its per-layer reentrant
checkpoint call, and its P-tuning v2 (`pre_seq_len`: a `PrefixEncoder` whose output becomes
every layer's past keys and values, `[L·2, P, B, groups, head dim]` split per layer, the mask
extended over the prefix, position ids still 0…T−1). The prefix dropout (0.1 in THUDM's code)
is a parameter here so gradient fixtures can run without it.
"""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, HIDDEN, FFN, LAYERS, HEADS, GROUPS, HEAD_DIM, SEQ = 512, 64, 96, 2, 4, 2, 16, 64
EPS = 1e-5


def batch():
    torch.manual_seed(0)
    ids = torch.randint(0, 500, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 7:] = 0  # right padding
    mask[1, :3] = 0  # left padding
    labels = ids.masked_fill(mask == 0, -100)
    # Nothing predicts the left-padded row's first token (a prompt's first token, [gMASK] in
    # ChatGLM3, never is): the last padded position, whose logits ChatGLM3's get_masks and
    # transformers' mask make differently, carries no loss.
    labels[1, 3] = -100
    return ids, mask, labels


def causal_loss(logits, labels):
    logits = logits.float()[..., :-1, :].contiguous()
    return F.cross_entropy(logits.view(-1, logits.size(-1)), labels[..., 1:].reshape(-1),
                           ignore_index=-100)


# ---- ChatGLM3's network, after THUDM's modeling_chatglm.py ----------------------------------

class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return (self.weight * (x * torch.rsqrt(variance + EPS))).to(x.dtype)


def rope_cache(seq_len, n_elem, base=10000.0):
    """RotaryEmbedding.forward_impl: [seq_len, n_elem / 2, 2] of (cos, sin)."""
    theta = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.float) / n_elem))
    idx_theta = torch.outer(torch.arange(seq_len, dtype=torch.float), theta).float()
    return torch.stack([torch.cos(idx_theta), torch.sin(idx_theta)], dim=-1)


def apply_rotary_pos_emb(x, cache):
    """x [b, np, sq, hn]: the first 2·cache.size(-2) dims turn in interleaved pairs."""
    b, np_, sq, _ = x.shape
    rot_dim = cache.shape[-2] * 2
    x, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    cache = cache[:sq]
    xshaped = x.reshape(b, np_, sq, rot_dim // 2, 2)
    cache = cache.view(1, 1, sq, xshaped.size(3), 2)
    out = torch.stack([
        xshaped[..., 0] * cache[..., 0] - xshaped[..., 1] * cache[..., 1],
        xshaped[..., 1] * cache[..., 0] + xshaped[..., 0] * cache[..., 1],
    ], -1).flatten(3)
    return torch.cat((out, x_pass), dim=-1)


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query_key_value = nn.Linear(HIDDEN, (HEADS + 2 * GROUPS) * HEAD_DIM, bias=True)
        self.dense = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)

    def forward(self, h, mask, rotary_pos_emb, kv_cache=None):
        b, sq, _ = h.shape
        q, k, v = self.query_key_value(h).split(
            [HEADS * HEAD_DIM, GROUPS * HEAD_DIM, GROUPS * HEAD_DIM], dim=-1)
        q = q.view(b, sq, HEADS, HEAD_DIM).transpose(1, 2)
        k = k.view(b, sq, GROUPS, HEAD_DIM).transpose(1, 2)
        v = v.view(b, sq, GROUPS, HEAD_DIM).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, rotary_pos_emb), apply_rotary_pos_emb(k, rotary_pos_emb)
        if kv_cache is not None:  # a P-tuning prefix: keys and values before the sequence's
            cache_k, cache_v = kv_cache
            k, v = torch.cat((cache_k, k), dim=2), torch.cat((cache_v, v), dim=2)
        sk = k.shape[2]
        # multi_query_attention: head h reads group h // (np / ng)
        k = k.unsqueeze(2).expand(-1, -1, HEADS // GROUPS, -1, -1).reshape(b, HEADS, sk, HEAD_DIM)
        v = v.unsqueeze(2).expand(-1, -1, HEADS // GROUPS, -1, -1).reshape(b, HEADS, sk, HEAD_DIM)
        if mask is None:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, ~mask)
        return self.dense(ctx.transpose(1, 2).reshape(b, sq, HEADS * HEAD_DIM))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(HIDDEN, 2 * FFN, bias=False)
        self.dense_4h_to_h = nn.Linear(FFN, HIDDEN, bias=False)

    def forward(self, x):
        gate, up = torch.chunk(self.dense_h_to_4h(x), 2, dim=-1)
        return self.dense_4h_to_h(F.silu(gate) * up)


class GLMBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = RMSNorm(HIDDEN)
        self.self_attention = SelfAttention()
        self.post_attention_layernorm = RMSNorm(HIDDEN)
        self.mlp = MLP()

    def forward(self, hidden_states, attention_mask, rotary_pos_emb, kv_cache=None, use_cache=False):
        x = hidden_states + self.self_attention(self.input_layernorm(hidden_states), attention_mask,
                                                rotary_pos_emb, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x)), kv_cache


class Embedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, HIDDEN)

    def forward(self, ids):
        return self.word_embeddings(ids)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([GLMBlock() for _ in range(LAYERS)])
        self.final_layernorm = RMSNorm(HIDDEN)
        self.gradient_checkpointing = False
        self.checkpoint_kwargs = {}

    def forward(self, hidden_states, attention_mask, rotary_pos_emb, kv_caches=None):
        kv_caches = kv_caches or [None] * LAYERS
        use_cache = False
        for index, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training:
                # ChatGLM3, December 2023: no use_reentrant (PyTorch's default: reentrant).
                hidden_states, _ = torch.utils.checkpoint.checkpoint(
                    layer, hidden_states, attention_mask, rotary_pos_emb, kv_caches[index],
                    use_cache, **self.checkpoint_kwargs)
            else:
                hidden_states, _ = layer(hidden_states, attention_mask, rotary_pos_emb,
                                         kv_caches[index])
        return self.final_layernorm(hidden_states)


class PrefixEncoder(nn.Module):
    """THUDM's PrefixEncoder: prefix positions → every layer's keys and values, through a
    two-layer tanh MLP when `prefix_projection`."""

    def __init__(self, pre_seq_len, prefix_projection):
        super().__init__()
        kv_size = LAYERS * HEAD_DIM * GROUPS * 2
        self.prefix_projection = prefix_projection
        self.embedding = nn.Embedding(pre_seq_len, kv_size)
        if prefix_projection:
            self.trans = nn.Sequential(nn.Linear(kv_size, HIDDEN), nn.Tanh(),
                                       nn.Linear(HIDDEN, kv_size))

    def forward(self, prefix):
        if self.prefix_projection:
            return self.trans(self.embedding(prefix))
        return self.embedding(prefix)


class Transformer(nn.Module):
    def __init__(self, pre_seq_len=None, prefix_projection=False, prefix_dropout=0.1):
        super().__init__()
        self.embedding = Embedding()
        self.encoder = Encoder()
        self.output_layer = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.pre_seq_len = pre_seq_len
        if pre_seq_len is not None:
            for param in self.parameters():
                param.requires_grad = False
            self.prefix_tokens = torch.arange(pre_seq_len).long()
            self.prefix_encoder = PrefixEncoder(pre_seq_len, prefix_projection)
            self.dropout = nn.Dropout(prefix_dropout)

    def get_prompt(self, batch_size):
        """Every layer's prefix (keys, values), each [B, groups, P, head dim]."""
        prefix_tokens = self.prefix_tokens.unsqueeze(0).expand(batch_size, -1)
        past_key_values = self.prefix_encoder(prefix_tokens)
        past_key_values = past_key_values.view(batch_size, self.pre_seq_len, LAYERS * 2, GROUPS,
                                               HEAD_DIM)
        past_key_values = self.dropout(past_key_values)
        past_key_values = past_key_values.permute([2, 1, 0, 3, 4]).split(2)
        # THUDM's layout is [P, B, groups, head dim]; this network's attention is head-major.
        return [(kv[0].permute(1, 2, 0, 3), kv[1].permute(1, 2, 0, 3)) for kv in past_key_values]


class ChatGLM(nn.Module):
    """ChatGLMForConditionalGeneration's forward on a padded batch."""

    # As transformers' PreTrainedModel reports before `gradient_checkpointing_enable()`: THUDM's
    # demo calls get_peft_model first. (Had checkpointing been on already, PEFT would call
    # enable_input_require_grads itself and the report would never have happened.)
    is_gradient_checkpointing = False

    def __init__(self, **prefix):
        super().__init__()
        self.transformer = Transformer(**prefix)

    @staticmethod
    def get_masks(ids, past_length, padding_mask):
        b, sq = ids.shape
        full = torch.ones(b, sq, sq).tril_()
        if past_length:
            full = torch.cat((torch.ones(b, sq, past_length), full), dim=-1)
        full = full * padding_mask.unsqueeze(1)
        if not past_length:
            full -= padding_mask.unsqueeze(-1) - 1
        return (full < 0.5).bool().unsqueeze(1)

    def forward(self, input_ids, attention_mask, labels):
        t = self.transformer
        h = t.embedding(input_ids)
        past, p = None, 0
        if t.pre_seq_len is not None:
            past, p = t.get_prompt(input_ids.shape[0]), t.pre_seq_len
            attention_mask = torch.cat([attention_mask.new_ones((input_ids.shape[0], p)),
                                        attention_mask], dim=-1)
        if attention_mask.all() and not past:
            mask = None
        else:
            mask = self.get_masks(input_ids, p, attention_mask)
        logits = t.output_layer(t.encoder(h, mask, rope_cache(SEQ, HEAD_DIM // 2), past))
        return logits, causal_loss(logits, labels)

    def enable_input_require_grads(self):
        """transformers' PreTrainedModel.enable_input_require_grads, as THUDM's fix calls it."""
        self.transformer.embedding.word_embeddings.register_forward_hook(
            lambda module, inputs, output: output.requires_grad_(True))


def chatglm_names(glm_state):
    """GlmForCausalLM's tensors under ChatGLM3's names."""
    out = {"transformer.embedding.word_embeddings.weight": glm_state["model.embed_tokens.weight"]}
    for i in range(LAYERS):
        g, c = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        a = g + "self_attn."
        out[c + "input_layernorm.weight"] = glm_state[g + "input_layernorm.weight"]
        for kind in ["weight", "bias"]:
            out[c + f"self_attention.query_key_value.{kind}"] = torch.cat(
                [glm_state[a + f"{p}_proj.{kind}"] for p in "qkv"], dim=0)
        out[c + "self_attention.dense.weight"] = glm_state[a + "o_proj.weight"]
        out[c + "post_attention_layernorm.weight"] = glm_state[g + "post_attention_layernorm.weight"]
        out[c + "mlp.dense_h_to_4h.weight"] = glm_state[g + "mlp.gate_up_proj.weight"]
        out[c + "mlp.dense_4h_to_h.weight"] = glm_state[g + "mlp.down_proj.weight"]
    out["transformer.encoder.final_layernorm.weight"] = glm_state["model.norm.weight"]
    out["transformer.output_layer.weight"] = glm_state["lm_head.weight"]
    return out


