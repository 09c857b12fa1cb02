"""Model factories for the real-world benchmark: third-party architectures from small
configs, random weights, no downloads. Each returns a model in eval mode."""

from __future__ import annotations

import transformers as tf

VOCAB = 1000
SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128, "max_position_embeddings": 128}


def _eval(model):
    return model.eval()


# --- transformers: encoders ------------------------------------------------------------

def bert():
    return _eval(tf.BertModel(tf.BertConfig(vocab_size=VOCAB, **SMALL)))


def distilbert():
    return _eval(tf.DistilBertModel(tf.DistilBertConfig(
        vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=128)))


def roberta():
    return _eval(tf.RobertaModel(tf.RobertaConfig(vocab_size=VOCAB, **{
        **SMALL, "max_position_embeddings": 130})))


def albert():
    return _eval(tf.AlbertModel(tf.AlbertConfig(vocab_size=VOCAB, embedding_size=32, **SMALL)))


def electra():
    return _eval(tf.ElectraModel(tf.ElectraConfig(vocab_size=VOCAB, embedding_size=32, **SMALL)))


# --- transformers: decoder-only, no KV cache --------------------------------------------

def gpt2():
    return _eval(tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128, use_cache=False,
        bos_token_id=0, eos_token_id=0)))


def llama():
    return _eval(tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=VOCAB, num_key_value_heads=2, use_cache=False, **SMALL)))


def qwen2():
    return _eval(tf.Qwen2ForCausalLM(tf.Qwen2Config(
        vocab_size=VOCAB, num_key_value_heads=2, use_cache=False, **SMALL)))


def opt():
    return _eval(tf.OPTForCausalLM(tf.OPTConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        ffn_dim=128, word_embed_proj_dim=64, max_position_embeddings=128, use_cache=False)))


# --- transformers: the encoder of an encoder-decoder -------------------------------------

def t5_encoder():
    return _eval(tf.T5EncoderModel(tf.T5Config(
        vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)))


def bart_encoder():
    config = tf.BartConfig(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128)
    return _eval(tf.BartModel(config).get_encoder())


# --- transformers: vision -----------------------------------------------------------------

def vit():
    return _eval(tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, **SMALL)))


def convnext():
    return _eval(tf.ConvNextModel(tf.ConvNextConfig(
        hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1], image_size=64)))


def swin():
    return _eval(tf.SwinModel(tf.SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 2], num_heads=[2, 4],
        window_size=4)))


def mobilevit():
    return _eval(tf.MobileViTModel(tf.MobileViTConfig(
        image_size=64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64])))


# --- transformers: audio ------------------------------------------------------------------

def wav2vec2():
    return _eval(tf.Wav2Vec2Model(tf.Wav2Vec2Config(
        conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **SMALL)))


def whisper_encoder():
    config = tf.WhisperConfig(
        vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=32,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1)
    return _eval(tf.WhisperModel(config).get_encoder())


# --- MONAI --------------------------------------------------------------------------------

def monai_unet():
    from monai.networks.nets import UNet

    return _eval(UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32),
                      strides=(2, 2), num_res_units=1))


def monai_segresnet():
    from monai.networks.nets import SegResNet

    return _eval(SegResNet(spatial_dims=2, init_filters=8, in_channels=1, out_channels=2,
                           blocks_down=(1, 2, 2), blocks_up=(1, 1)))


def monai_basicunet():
    from monai.networks.nets import BasicUNet

    return _eval(BasicUNet(spatial_dims=2, in_channels=1, out_channels=2,
                           features=(8, 8, 16, 32, 64, 8)))


def monai_densenet121():
    from monai.networks.nets import DenseNet121

    return _eval(DenseNet121(spatial_dims=2, in_channels=1, out_channels=3))
