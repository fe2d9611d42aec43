"""sharedflow under the reference harnesses' protocols (ref_bench_audio.py / ref_bench_image.py).

The project's own copy of the adapter in ``shared/reference/bench``, kept in step with the API:

    cd shared/reference/bench && PYTHONPATH=PROJECT/bench python ref_bench_audio.py \
        --compare sf_adapter:SFAdapter ...

Audio: `SFAdapter` implements the RefAdapter interface of ref_bench_audio.py for every MODELS
entry, building the matching sharedflow model from the *reference* config file (spec['config'],
read from --ref-root), so both sides always use the same hyper-parameters:

  waveglow                          -> sharedflow.models.waveglow (NVIDIA config.json)
  waveflow-h16-r64/-r128 (NanoFlow) -> sharedflow.models.waveflow(height=16, channels=64/128)
  *_L0SG-WaveFlow                   -> sharedflow.models.waveflow_parakeet (L0SG/WaveFlow layout)
  nanoflow-naive / -decomp / emb*   -> sharedflow.models.waveflow(sharing=shared / decomposed /
                                       nanoflow, embedding_dim=size_flow_embed)

Training: the training form (weight norm on), the model's own loss `Vocoder.nll(audio, mel)`
(NLL in nats per sample under a unit Gaussian, i.e. sigma 1, with the constant 0.5 ln 2pi,
as WaveFlowLossDataParallel has it; NVIDIA's WaveGlowLoss drops the constant, so for
WaveGlow ours' loss_at_init is ~0.919 higher: same cost).
Synthesis: sharedflow's default path, `Vocoder.synthesize(mel, t)` on the deploy form
(`sharedflow.sharing.deploy`: weight norm removed, flow embeddings folded), in fp32 and in
bf16 (`model.flow.to(torch.bfloat16)` after deploy, mel front end left fp32, exactly what
`sharedflow synthesize --dtype bf16` does; the mel is cast inside `synthesize`).  bf16 only
pays on CPUs with AVX512-BF16 or AMX: on an AVX2-only CPU torch emulates it and it is several
times slower than fp32 (skip it there with the harness's --skip-variants deploy_bf16).
Shapes: the reference train shapes (audio 1x16000, mel 1x80x63); synthesis from 87 frames ->
256*87 = 22272 samples, the same output length as the references (WaveGlow.infer: 87 frames;
WaveFlow/NanoFlow.reverse: 90 frames, of which they drop 3). Temperature: SHAPES
(WaveGlow sigma 0.6, WaveFlow/NanoFlow 1.0), passed explicitly.

The variant preps do not mutate the model: each stores its own deployed copy, so they work
both with the harness's plain mode (preps applied in turn to one model) and its --compare mode.

Image: `tarflow_small_cases(cfg, cond_cfg, x, noise_shape, labels, guidance)` returns the
sharedflow callables matching ref_bench_image.py's TarFlow-small timings (used by its
--vs-sharedflow mode).
"""

import contextlib
import json
import os
import sys

import torch

import sharedflow  # noqa: F401  (imported before any reference repo is put on sys.path)
from sharedflow.models import tarflow, waveflow, waveflow_parakeet, waveglow
from sharedflow.sharing import deploy, remove_weight_norm

# the harness's shapes (single source of truth); the adapter is imported by the harness, so
# reuse its module object when it runs as __main__ instead of importing the file a second time
_main = sys.modules.get("__main__")
if _main is not None and hasattr(_main, "SHAPES") and hasattr(_main, "MODELS"):
    SHAPES = _main.SHAPES
else:  # imported on its own
    from ref_bench_audio import SHAPES

SHARING = {
    "waveflow": "independent",
    "nanoflow_naive": "shared",
    "nanoflow_decomp": "decomposed",
    "nanoflow": "nanoflow",
}


class SFAdapter:
    """sharedflow vocoders behind the RefAdapter interface (see the module docstring)."""

    cumulative_preps = False  # each synth variant's prep stands alone (read by --compare)

    def __init__(self, spec, ref_root):
        self.spec = spec
        with open(os.path.join(ref_root, spec["repo"], spec["config"])) as f:
            self.cfg = json.load(f)
        sigma = self.cfg["train_config"]["sigma"]
        if sigma != 1.0:
            raise ValueError(
                f"{spec['name']}: reference sigma {sigma}; sharedflow trains with a unit Gaussian"
            )

    def context(self):
        return contextlib.nullcontext()

    # -- construction -------------------------------------------------------
    def build(self):
        if self.spec["family"] == "waveglow":
            c = self.cfg["waveglow_config"]
            wn = c["WN_config"]
            return waveglow(
                n_flows=c["n_flows"],
                n_group=c["n_group"],
                n_early_every=c["n_early_every"],
                n_early_size=c["n_early_size"],
                channels=wn["n_channels"],
                n_layers=wn["n_layers"],
                kernel_size=wn["kernel_size"],
                n_mels=c["n_mel_channels"],
            )
        c = self.cfg["waveflow_config"]
        common = dict(
            height=c["n_height"],
            channels=c["res_channels"],
            n_layers=c["n_layer"],
            n_flows=c["n_flow"],
            dilation_cycle=c["n_layer_per_cycle"],
            n_mels=c["cin_channels"],
        )
        if self.spec["repo"] == "waveflow":  # L0SG/WaveFlow: the Parakeet layout
            if c["coupling_type"] != "waveflow":
                raise ValueError(c["coupling_type"])
            perm = "bipartize" if "bipartize" in self.spec["config"] else "flip"
            return waveflow_parakeet(permutation=perm, **common)
        sharing = SHARING[c["coupling_type"]]
        emb = c.get("size_flow_embed", 0) if sharing == "nanoflow" else 0
        return waveflow(sharing=sharing, embedding_dim=emb, **common)

    def n_flows(self):
        if self.spec["family"] == "waveglow":
            return self.cfg["waveglow_config"]["n_flows"]
        return self.cfg["waveflow_config"]["n_flow"]

    # -- training -----------------------------------------------------------
    def make_loss(self):
        return lambda nll: nll  # the harness calls .mean().backward()

    def forward(self, model, audio, mel):
        return model.nll(audio, mel)  # (B,) nats per sample, unit Gaussian

    # -- synthesis ----------------------------------------------------------
    def synth_frames(self):
        return SHAPES["synth_samples"] // SHAPES["hop"]  # 87 -> 22272 samples

    def temperature(self):
        if self.spec["family"] == "waveglow":
            return SHAPES["waveglow_sigma"]
        return SHAPES["waveflow_temp"]

    def synth_variants(self):
        t = self.temperature()
        fp32, bf16 = {}, {}

        def prep_fp32(m):
            fp32["m"] = deploy(m)

        def prep_bf16(m):
            d = deploy(m)
            d.flow.to(torch.bfloat16)  # as `sharedflow synthesize --dtype bf16`
            bf16["m"] = d

        return [
            ("deploy_fp32", prep_fp32, lambda m, c: fp32["m"].synthesize(c, t)),
            ("deploy_bf16", prep_bf16, lambda m, c: bf16["m"].synthesize(c, t)),
        ]

    def no_wn(self, m):
        return remove_weight_norm(m)

    def deploy(self, m):
        return deploy(m)


# ---------------------------------------------------------------------------
# image: TarFlow small, for ref_bench_image.py --vs-sharedflow
# ---------------------------------------------------------------------------
def build_tarflow(cfg):
    """sharedflow TarFlow from a reference `transformer_flow.Model` kwargs dict."""
    return tarflow(
        image_size=cfg["img_size"],
        in_channels=cfg["in_channels"],
        patch_size=cfg["patch_size"],
        channels=cfg["channels"],
        n_blocks=cfg["num_blocks"],
        n_layers=cfg["layers_per_block"],
        num_classes=cfg["num_classes"],
        affine=cfg["nvp"],
    )


def tarflow_small_cases(cfg, cond_cfg, x, labels, guidance, seed=0):
    """(models, callables) matching ref_bench_image.tarflow_timings:

    train_fwd_bwd:   zero_grad, own loss -log_prob(x).mean()/n_dims (nats per dim), backward
    sample_kvcache:  ImageFlow.sample(B): KV-cached sequential inverse, temperature 1, uncond
    sample_cond_cfg: ImageFlow.sample(B, labels, guidance=w, annealed=True)
    Weights as the reference harness: the uncond model's output projections N(0, 0.02) (the
    init zero-fills them), the cond model at its init.
    """
    from sharedflow.nets.transformer import CausalTransformer

    torch.manual_seed(seed)
    m = build_tarflow(cfg)
    for mod in m.modules():
        if isinstance(mod, CausalTransformer) and mod.proj_out is not None:
            torch.nn.init.normal_(mod.proj_out.weight, std=0.02)
    torch.manual_seed(seed)
    mc = build_tarflow(cond_cfg)
    B = x.shape[0]

    def fwd_bwd():
        m.zero_grad(set_to_none=True)
        loss = -m.log_prob(x).mean() / m.n_dims
        loss.backward()
        return loss

    def sample():
        return m.sample(B)

    def sample_cfg():
        return mc.sample(B, labels, guidance=guidance, annealed=True)

    return (m, mc), dict(train_fwd_bwd=fwd_bwd, sample_kvcache=sample, sample_cond_cfg=sample_cfg)
