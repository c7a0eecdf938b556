from models._torchvision_ops import ensure_torchvision_ops

ensure_torchvision_ops()  # core imports torchvision-based libraries (pytorch-grad-cam)
