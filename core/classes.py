"""Label sets the app serves."""

MANET_CLASSES = ("normal", "covid", "tb", "bacterial", "viral")

CLASS_TITLES = {
    "normal": "Normal",
    "covid": "COVID-19",
    "tb": "Tuberculosis",
    "bacterial": "Bacterial pneumonia",
    "viral": "Viral pneumonia",
}
