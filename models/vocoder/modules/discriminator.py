"""GAN discriminators: HiFi-GAN multi-scale + multi-period, UnivNet multi-resolution spectrogram
+ multi-period.

Every discriminator returns, per sub-discriminator, the list of its layer outputs; the last entry
is the decision map the adversarial losses use, the others feed the feature-matching loss.

Checkpoint compatibility (official AudioDec training checkpoints resume unchanged):
- Module names follow the original (`msd`, `mpd`, `mrsd`, `discriminators.<i>`, `layers`, `convs`,
  `output_conv`, each conv wrapped as `.conv`), and the UnivNet STFT window is a saved buffer.
- Weight norm is the `torch.nn.utils.parametrizations` one, but a state-dict hook on each
  normalized discriminator writes its entries under the original's old-style names
  (`weight_g`, `weight_v`) and a load hook accepts either spelling. Parameter order is the
  original's too (bias, g, v per conv), so saved optimizer states line up.
- The original applies its weight / spectral norm only to 2-D convolutions, so its scale
  discriminators (1-D convolutions) train with no normalization whatever `follow_official_norm`
  says; the official checkpoints and parameter counts reflect that. `HiFiGANDiscriminator` does the
  same unless built with `norm_scale_discriminators=True`, which applies the norms as documented
  (spectral-norm entries then keep the parametrization's names; no official checkpoint has any).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from layers.activation import get_activation
from layers.conv import NonCausalConv1d, NonCausalConv2d
from layers.weight_norm import keep_original_names

LayerOutputs = list[torch.Tensor]

_SLOPE_0_1: Mapping[str, Any] = MappingProxyType({"negative_slope": 0.1})
_SLOPE_0_2: Mapping[str, Any] = MappingProxyType({"negative_slope": 0.2})
_OFFICIAL_POOLING: Mapping[str, Any] = MappingProxyType({"kernel_size": 4, "stride": 2, "padding": 2})


def _apply_weight_norm(module: nn.Module) -> None:
    """Weight-normalize (dim 0) every conv of `module`, with original key names in its state dict."""
    for submodule in list(module.modules()):
        if isinstance(submodule, (nn.Conv1d, nn.Conv2d)):
            parametrizations.weight_norm(submodule)
    keep_original_names(module)


def _apply_spectral_norm(module: nn.Module) -> None:
    """Spectrally normalize every conv of `module`."""
    for submodule in list(module.modules()):
        if isinstance(submodule, (nn.Conv1d, nn.Conv2d)):
            parametrizations.spectral_norm(submodule)


def _apply_norm(module: nn.Module, use_weight_norm: bool, use_spectral_norm: bool) -> None:
    if use_weight_norm and use_spectral_norm:
        raise ValueError("use either weight norm or spectral norm, not both")
    if use_weight_norm:
        _apply_weight_norm(module)
    elif use_spectral_norm:
        _apply_spectral_norm(module)


class HiFiGANPeriodDiscriminator(nn.Module):
    """Looks at the signal folded into columns of `period` samples, with (k, 1) 2-D convs."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        period: int = 3,
        kernel_sizes: Sequence[int] = (5, 3),
        channels: int = 32,
        downsample_scales: Sequence[int] = (3, 3, 3, 3, 1),
        max_downsample_channels: int = 1024,
        bias: bool = True,
        nonlinear_activation: str = "LeakyReLU",
        nonlinear_activation_params: Mapping[str, Any] = _SLOPE_0_1,
        use_weight_norm: bool = True,
        use_spectral_norm: bool = False,
    ) -> None:
        """
        Args:
            kernel_sizes: (height of the downsampling kernels, output kernel height + 1); both odd.
            channels: channels of the first conv, multiplied by 4 per layer up to
                `max_downsample_channels`.
            downsample_scales: one conv per entry, striding the time axis by that factor.
            bias: conv biases (the original ignores this flag here and always adds them; every
                released config says true).
        """
        super().__init__()
        if len(kernel_sizes) != 2 or any(size % 2 == 0 for size in kernel_sizes):
            raise ValueError(f"kernel_sizes must be two odd sizes, got {kernel_sizes}")
        self.period = period
        self.convs = nn.ModuleList()
        in_chs, out_chs = in_channels, channels
        for scale in downsample_scales:
            self.convs.append(
                nn.Sequential(
                    NonCausalConv2d(
                        in_chs, out_chs, (kernel_sizes[0], 1), stride=(scale, 1),
                        padding=((kernel_sizes[0] - 1) // 2, 0), bias=bias,
                    ),
                    get_activation(nonlinear_activation, nonlinear_activation_params),
                )
            )
            in_chs = out_chs
            out_chs = min(out_chs * 4, max_downsample_channels)
        self.output_conv = NonCausalConv2d(
            in_chs, out_channels, (kernel_sizes[1] - 1, 1), stride=1,
            padding=((kernel_sizes[1] - 1) // 2, 0), bias=bias,
        )
        _apply_norm(self, use_weight_norm, use_spectral_norm)

    def forward(self, signal: torch.Tensor) -> LayerOutputs:
        """(B, C, T) -> [(B, C_l, T_l, period) per conv..., decision (B, out_channels * T' * period)].

        A length that is not a multiple of the period is reflect-padded at the end.
        """
        batch, channels, length = signal.shape
        if length % self.period:
            pad = self.period - length % self.period
            signal = F.pad(signal, (0, pad), mode="reflect")
            length += pad
        hidden = signal.view(batch, channels, length // self.period, self.period)
        outputs = []
        for conv in self.convs:
            hidden = conv(hidden)
            outputs.append(hidden)
        outputs.append(torch.flatten(self.output_conv(hidden), 1, -1))
        return outputs


class HiFiGANMultiPeriodDiscriminator(nn.Module):
    """One period discriminator per entry of `periods`."""

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        discriminator_params: Mapping[str, Any] | None = None,
    ) -> None:
        """`discriminator_params` are `HiFiGANPeriodDiscriminator` kwargs (its `period` is set here)."""
        super().__init__()
        params = dict(discriminator_params or {})
        self.discriminators = nn.ModuleList(
            HiFiGANPeriodDiscriminator(**{**copy.deepcopy(params), "period": period}) for period in periods
        )

    def forward(self, signal: torch.Tensor) -> list[LayerOutputs]:
        """(B, C, T) -> one list of layer outputs per period."""
        return [discriminator(signal) for discriminator in self.discriminators]


class HiFiGANScaleDiscriminator(nn.Module):
    """Grouped, strided 1-D convs over the waveform."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        kernel_sizes: Sequence[int] = (15, 41, 5, 3),
        channels: int = 128,
        max_downsample_channels: int = 1024,
        max_groups: int = 16,
        bias: bool = True,
        downsample_scales: Sequence[int] = (2, 2, 4, 4, 1),
        nonlinear_activation: str = "LeakyReLU",
        nonlinear_activation_params: Mapping[str, Any] = _SLOPE_0_1,
        use_weight_norm: bool = False,
        use_spectral_norm: bool = False,
    ) -> None:
        """
        Args:
            kernel_sizes: (first conv, downsampling convs, last hidden conv, output conv); all odd.
            channels: width of the first conv; downsampling convs double it up to
                `max_downsample_channels`, with groups 4, 16, ... up to `max_groups`.
            use_weight_norm, use_spectral_norm: off by default, as the original effectively trains
                (see the module docstring).
        """
        super().__init__()
        if len(kernel_sizes) != 4 or any(size % 2 == 0 for size in kernel_sizes):
            raise ValueError(f"kernel_sizes must be four odd sizes, got {kernel_sizes}")
        first, downsample, last, output = kernel_sizes
        self.layers = nn.ModuleList(
            [
                nn.Sequential(
                    NonCausalConv1d(in_channels, channels, first, padding=(first - 1) // 2, bias=bias),
                    get_activation(nonlinear_activation, nonlinear_activation_params),
                )
            ]
        )
        in_chs, out_chs, groups = channels, channels, 4
        for scale in downsample_scales:
            self.layers.append(
                nn.Sequential(
                    NonCausalConv1d(
                        in_chs, out_chs, downsample, stride=scale, padding=(downsample - 1) // 2,
                        groups=groups, bias=bias,
                    ),
                    get_activation(nonlinear_activation, nonlinear_activation_params),
                )
            )
            in_chs = out_chs
            out_chs = min(in_chs * 2, max_downsample_channels)
            groups = min(groups * 4, max_groups)
        out_chs = min(in_chs * 2, max_downsample_channels)
        self.layers.append(
            nn.Sequential(
                NonCausalConv1d(in_chs, out_chs, last, padding=(last - 1) // 2, bias=bias),
                get_activation(nonlinear_activation, nonlinear_activation_params),
            )
        )
        self.layers.append(NonCausalConv1d(out_chs, out_channels, output, padding=(output - 1) // 2, bias=bias))
        _apply_norm(self, use_weight_norm, use_spectral_norm)

    def forward(self, signal: torch.Tensor) -> LayerOutputs:
        """(B, C, T) -> [(B, C_l, T_l) per layer]; the last is the decision (B, out_channels, T')."""
        outputs = []
        for layer in self.layers:
            signal = layer(signal)
            outputs.append(signal)
        return outputs


class HiFiGANMultiScaleDiscriminator(nn.Module):
    """Scale discriminators on the waveform and on successively pooled copies of it."""

    def __init__(
        self,
        scales: int = 3,
        downsample_pooling: str = "AvgPool1d",
        downsample_pooling_params: Mapping[str, Any] = _OFFICIAL_POOLING,
        discriminator_params: Mapping[str, Any] | None = None,
        follow_official_norm: bool = False,
    ) -> None:
        """
        Args:
            scales: number of scale discriminators.
            downsample_pooling: `torch.nn` pooling between scales, with its params (default
                kernel 4, stride 2, padding 2, as the official HiFi-GAN).
            discriminator_params: `HiFiGANScaleDiscriminator` kwargs.
            follow_official_norm: spectral norm on the first scale, weight norm on the others
                (overriding the norm flags of `discriminator_params`), as the official HiFi-GAN.
        """
        super().__init__()
        self.discriminators = nn.ModuleList()
        for scale in range(scales):
            params = copy.deepcopy(dict(discriminator_params or {}))
            if follow_official_norm:
                params["use_weight_norm"] = scale > 0
                params["use_spectral_norm"] = scale == 0
            self.discriminators.append(HiFiGANScaleDiscriminator(**params))
        pooling = getattr(nn, downsample_pooling, None)
        if not (isinstance(pooling, type) and issubclass(pooling, nn.Module)):
            raise ValueError(f"unknown pooling {downsample_pooling!r}: expected a torch.nn module name")
        self.pooling = pooling(**downsample_pooling_params)

    def forward(self, signal: torch.Tensor) -> list[LayerOutputs]:
        """(B, C, T) -> one list of layer outputs per scale."""
        outputs = []
        for discriminator in self.discriminators:
            outputs.append(discriminator(signal))
            signal = self.pooling(signal)
        return outputs


class UnivNetSpectralDiscriminator(nn.Module):
    """2-D convs over the linear STFT magnitude (frames x bins) at one resolution."""

    window: torch.Tensor

    def __init__(
        self,
        fft_size: int,
        hop_size: int,
        win_length: int,
        window: str = "hann_window",
        kernel_sizes: Sequence[Sequence[int]] = ((3, 9), (3, 9), (3, 9), (3, 9), (3, 3), (3, 3)),
        strides: Sequence[Sequence[int]] = ((1, 1), (1, 2), (1, 2), (1, 2), (1, 1), (1, 1)),
        channels: int = 32,
        bias: bool = True,
        nonlinear_activation: str = "LeakyReLU",
        nonlinear_activation_params: Mapping[str, Any] = _SLOPE_0_2,
        use_weight_norm: bool = True,
    ) -> None:
        """
        Args:
            fft_size, hop_size, win_length, window: STFT geometry (`window` a torch window function).
            kernel_sizes, strides: (frames, bins) pairs, at least two: the first conv, the hidden
                convs, the last hidden conv and the output conv (to one channel), one pair each; with
                two pairs the first is used by the first and the last hidden conv (three convs), as the
                original builds them.
            channels: width of the hidden convs.
        """
        super().__init__()
        if len(kernel_sizes) != len(strides) or len(kernel_sizes) < 2:
            raise ValueError("kernel_sizes and strides must have the same length, at least 2")
        window_function = getattr(torch, window, None)
        if not window.endswith("_window") or window_function is None:
            raise ValueError(f"unknown window {window!r}: expected a torch window function name")
        self.fft_size = fft_size
        self.hop_size = hop_size
        self.win_length = win_length
        self.register_buffer("window", window_function(win_length))
        self.layers = nn.ModuleList()
        in_chs = 1
        last = len(kernel_sizes) - 1
        for index in (0, *range(1, last - 1), last - 1):
            kernel, stride = kernel_sizes[index], strides[index]
            self.layers.append(
                nn.Sequential(
                    NonCausalConv2d(in_chs, channels, tuple(kernel), stride=tuple(stride), bias=bias),
                    get_activation(nonlinear_activation, nonlinear_activation_params),
                )
            )
            in_chs = channels
        self.layers.append(
            NonCausalConv2d(channels, 1, tuple(kernel_sizes[-1]), stride=tuple(strides[-1]), bias=bias)
        )
        if use_weight_norm:
            _apply_weight_norm(self)

    def spectrogram(self, signal: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> magnitude (B, 1, frames, fft_size // 2 + 1).

        The signal is zero-padded by win_length // 2 on both sides, then STFT'd centered (reflect),
        as the original (torchaudio's `spectrogram` with `pad`).
        """
        batch, channels, _ = signal.shape
        padded = F.pad(signal.reshape(batch * channels, -1), (self.win_length // 2, self.win_length // 2))
        spectrum = torch.stft(
            padded, self.fft_size, self.hop_size, self.win_length, self.window.to(signal.dtype),
            center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
        )
        return spectrum.abs().reshape(batch, channels, *spectrum.shape[-2:]).transpose(-1, -2)

    def forward(self, signal: torch.Tensor) -> LayerOutputs:
        """(B, 1, T) -> [(B, C_l, frames_l, bins_l) per layer]; the last has one channel."""
        hidden = self.spectrogram(signal)
        outputs = []
        for layer in self.layers:
            hidden = layer(hidden)
            outputs.append(hidden)
        return outputs


class UnivNetMultiResolutionSpectralDiscriminator(nn.Module):
    """One spectral discriminator per STFT resolution."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann_window",
        discriminator_params: Mapping[str, Any] | None = None,
    ) -> None:
        """`discriminator_params` are `UnivNetSpectralDiscriminator` kwargs besides the geometry."""
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
        params = dict(discriminator_params or {})
        self.discriminators = nn.ModuleList(
            UnivNetSpectralDiscriminator(fft_size, hop_size, win_length, window, **copy.deepcopy(params))
            for fft_size, hop_size, win_length in zip(fft_sizes, hop_sizes, win_lengths)
        )

    def forward(self, signal: torch.Tensor) -> list[LayerOutputs]:
        """(B, 1, T) -> one list of layer outputs per resolution."""
        return [discriminator(signal) for discriminator in self.discriminators]


def _mono_batch(signal: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B * C, 1, T): every channel is judged as a signal of its own."""
    batch, channels, length = signal.shape
    return signal.reshape(batch * channels, 1, length)


class HiFiGANDiscriminator(nn.Module):
    """HiFi-GAN multi-scale (`msd`) + multi-period (`mpd`) discriminator; kwargs = config
    `discriminator_params` of the HiFiGAN / symAudioDec recipes."""

    def __init__(
        self,
        scales: int = 3,
        scale_downsample_pooling: str = "AvgPool1d",
        scale_downsample_pooling_params: Mapping[str, Any] = _OFFICIAL_POOLING,
        scale_discriminator_params: Mapping[str, Any] | None = None,
        follow_official_norm: bool = True,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        period_discriminator_params: Mapping[str, Any] | None = None,
        norm_scale_discriminators: bool = False,
    ) -> None:
        """
        Args:
            scales, scale_downsample_pooling, scale_downsample_pooling_params,
                scale_discriminator_params, follow_official_norm: `HiFiGANMultiScaleDiscriminator`.
            periods, period_discriminator_params: `HiFiGANMultiPeriodDiscriminator`.
            norm_scale_discriminators: apply the scale discriminators' norm settings. Off, they
                are unnormalized, as the original trains them and its checkpoints store them.
        """
        super().__init__()
        scale_params = dict(scale_discriminator_params or {})
        if not norm_scale_discriminators:
            scale_params.update(use_weight_norm=False, use_spectral_norm=False)
        self.msd = HiFiGANMultiScaleDiscriminator(
            scales=scales,
            downsample_pooling=scale_downsample_pooling,
            downsample_pooling_params=scale_downsample_pooling_params,
            discriminator_params=scale_params,
            follow_official_norm=follow_official_norm and norm_scale_discriminators,
        )
        self.mpd = HiFiGANMultiPeriodDiscriminator(periods=periods, discriminator_params=period_discriminator_params)

    def forward(self, signal: torch.Tensor) -> list[LayerOutputs]:
        """(B, C, T) -> scales + periods lists of layer outputs, channels folded into the batch."""
        signal = _mono_batch(signal)
        return self.msd(signal) + self.mpd(signal)


class UnivNetDiscriminator(nn.Module):
    """UnivNet multi-resolution spectrogram (`mrsd`) + HiFi-GAN multi-period (`mpd`)
    discriminator; kwargs = config `discriminator_params` of the UnivNet / symAudioDecUniv recipes."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann_window",
        spectral_discriminator_params: Mapping[str, Any] | None = None,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        period_discriminator_params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.mrsd = UnivNetMultiResolutionSpectralDiscriminator(
            fft_sizes=fft_sizes,
            hop_sizes=hop_sizes,
            win_lengths=win_lengths,
            window=window,
            discriminator_params=spectral_discriminator_params,
        )
        self.mpd = HiFiGANMultiPeriodDiscriminator(periods=periods, discriminator_params=period_discriminator_params)

    def forward(self, signal: torch.Tensor) -> list[LayerOutputs]:
        """(B, C, T) -> resolutions + periods lists of layer outputs, channels folded into the batch.

        (The original only folds channels when asked and fails on multi-channel input otherwise.)
        """
        signal = _mono_batch(signal)
        return self.mrsd(signal) + self.mpd(signal)


DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "HiFiGAN": HiFiGANDiscriminator,
    "symAudioDec": HiFiGANDiscriminator,
    "UnivNet": UnivNetDiscriminator,
    "symAudioDecUniv": UnivNetDiscriminator,
}
