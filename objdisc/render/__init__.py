"""Novel-view videos: camera paths (``motions``) and encoding (``video``)."""

from objdisc.render.motions import MOTIONS, camera_path, ease_fade
from objdisc.render.video import read_video, save_frames, write_mp4

__all__ = ["MOTIONS", "camera_path", "ease_fade", "read_video", "save_frames", "write_mp4"]
