"""The synthetic PoseTrack benchmark: the pipeline's embedded default data.

``diffpose synth`` renders short videos of articulated, textured people (1-4 per video) walking,
jogging, turning and gesturing in cluttered scenes with a panning/zooming camera, people crossing
and occluding each other, moving occluders, and short blur/defocus bursts, and writes PoseTrack18
ground truth for them (see :mod:`.annotate` for the labelling rule). Modules:

- :mod:`.skeleton` 3D kinematic body model and camera projection
- :mod:`.motion` trajectories, gait cycles and gestures
- :mod:`.render` textured body renderer with an occlusion (owner) map
- :mod:`.scene` background clutter, camera path, occluders
- :mod:`.degrade` motion blur, defocus, noise
- :mod:`.annotate` PoseTrack18 records and the labelling rule
- :mod:`.sequence` one sequence end to end; :mod:`.writer` files, workers, clean-up
- :mod:`.presets` sizes; :mod:`.preview` contact sheets with the ground truth drawn on
"""

from diffpose.data.synthetic.presets import PRESETS, Preset, get_preset
from diffpose.data.synthetic.writer import SequenceStats, generate

__all__ = ["PRESETS", "Preset", "SequenceStats", "generate", "get_preset"]
