"""Experience for the Trainer: the data module, the contracts it meets the algorithms at, and the sources."""

from lightning_accelrl.data.datamodule import ExperienceDataModule
from lightning_accelrl.data.needs import ExperienceConsumer, ExperienceLink, ExperienceNeeds
from lightning_accelrl.data.source import ExperienceSource, SourceContext
from lightning_accelrl.data.sources import register_source
from lightning_accelrl.data.supervision import SamplerProcessError

__all__ = [
    "ExperienceConsumer",
    "ExperienceDataModule",
    "ExperienceLink",
    "ExperienceNeeds",
    "ExperienceSource",
    "SamplerProcessError",
    "SourceContext",
    "register_source",
]
