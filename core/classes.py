"""Label sets the app serves and how the page names them."""

MANET_CLASSES = ("normal", "covid", "tb", "bacterial", "viral")

CLASS_TITLES = {
    "normal": "Normal",
    "covid": "COVID-19",
    "tb": "Tuberculosis",
    "bacterial": "Bacterial pneumonia",
    "viral": "Viral pneumonia",
    "non-covid": "Not COVID-19",  # UNet + HRNet's negative class: normal, TB and every other pneumonia
    "pneumonia": "Pneumonia (not COVID-19)",  # COVID-CXNet's community-acquired pneumonia
    "cap": "Community-acquired pneumonia",  # paper 004's negative class (CT volumes)
}


def class_title(name: str) -> str:
    return CLASS_TITLES.get(name, name.capitalize())
