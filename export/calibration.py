"""Texts whose activations set the SmoothQuant scales (export/smooth.py).

Written for this purpose, in the model cards' two forms and many scripts, and kept apart from the
parity probe set (export/probes.py) and from every benchmark dataset, so no figure measured
afterwards was seen while calibrating. Only per-channel maxima are taken from them: the outlier
channels they reveal belong to the model, not to these texts.
"""
from __future__ import annotations

QUERIES = [
    "how long should you boil an egg for a soft yolk",
    "what causes the northern lights",
    "symptoms of vitamin D deficiency in adults",
    "best way to store fresh basil",
    "does caffeine affect sleep quality",
    "python read a csv file into a dictionary",
    "who painted the ceiling of the Sistine Chapel",
    "why is the sky blue",
    "average rainfall in Nairobi in April",
    "how do vaccines train the immune system",
    "difference between a virus and a bacterium",
    "cheap flights from Lisbon to Warsaw",
    "wie lange dauert ein Flug von Berlin nach Tokio",
    "quelle est la capitale de l'Australie",
    "cómo se prepara una tortilla de patatas",
    "come funziona un motore elettrico",
    "как приготовить борщ дома",
    "什么是机器学习",
    "富士山の高さはどれくらいですか",
    "ما هي أعراض الإنفلونزا",
    "भारत की सबसे लंबी नदी कौन सी है",
    "jinsi ya kupanda mahindi",
    "πόσο ψηλός είναι ο Όλυμπος",
    "서울에서 부산까지 기차로 얼마나 걸리나요",
    "ile kosztuje bilet do muzeum",
    "hoe maak je pannenkoeken",
    "İstanbul'da gezilecek yerler",
    "cara membuat nasi goreng",
]

PASSAGES = [
    "Soft-boiled eggs are cooked for about six minutes in gently boiling water, then cooled in ice "
    "water so the white sets while the yolk stays runny.",
    "Auroras appear when charged particles from the solar wind are guided by Earth's magnetic field "
    "into the upper atmosphere, where they excite oxygen and nitrogen atoms that then emit light.",
    "Vitamin D deficiency is common in winter at high latitudes. Adults may notice fatigue, bone "
    "pain and muscle weakness; a blood test for 25-hydroxyvitamin D confirms the diagnosis.",
    "The csv module's DictReader returns each row as a dictionary keyed by the header line. Open the "
    "file with newline='' and pass the file object to csv.DictReader.",
    "Michelangelo painted the Sistine Chapel ceiling between 1508 and 1512 at the commission of Pope "
    "Julius II. The work includes the Creation of Adam.",
    "Rayleigh scattering by the molecules of the air is stronger for short wavelengths, so more blue "
    "light than red reaches the eye from every direction of the sky.",
    "We measured the expression of 1,204 genes in 48 patients (p < 0.001) and found that the "
    "treatment reduced the inflammatory response by 35% compared with placebo (95% CI 21-49%).",
    "Der Flughafen liegt etwa 20 Kilometer südlich der Stadt und ist mit der S-Bahn in einer halben "
    "Stunde erreichbar. Nachtflüge sind nur eingeschränkt erlaubt.",
    "Canberra est la capitale de l'Australie depuis 1913 ; la ville a été conçue comme un compromis "
    "entre Sydney et Melbourne.",
    "La tortilla de patatas se hace con huevos, patatas y, según el gusto, cebolla, cocinadas "
    "lentamente en aceite de oliva.",
    "Борщ готовят из свёклы, капусты, картофеля и моркови на мясном бульоне; подают со сметаной.",
    "机器学习是人工智能的一个分支，它让计算机从数据中学习规律，而不需要明确编程。",
    "富士山は標高3776メートルの日本最高峰で、2013年に世界文化遺産に登録されました。",
    "تشمل أعراض الإنفلونزا الحمى والسعال وآلام العضلات والتعب، وتستمر عادة من أسبوع إلى أسبوعين.",
    "गंगा भारत की सबसे लंबी नदी है, जो हिमालय से निकलकर बंगाल की खाड़ी में गिरती है।",
    "Mahindi hupandwa mwanzoni mwa msimu wa mvua, mbegu mbili kwa kila shimo, kwa umbali wa sentimita "
    "sabini na tano kati ya mistari.",
    "Ο Όλυμπος είναι το ψηλότερο βουνό της Ελλάδας, με υψόμετρο 2.918 μέτρα στην κορυφή Μύτικας.",
    "KTX 고속열차를 타면 서울역에서 부산역까지 약 2시간 40분이 걸립니다.",
    "Bilet normalny do muzeum kosztuje 30 złotych, a w czwartki wstęp na wystawę stałą jest bezpłatny.",
    "Voor pannenkoeken meng je bloem, melk, eieren en een snufje zout tot een glad beslag.",
    "Ayasofya, Topkapı Sarayı ve Kapalıçarşı, İstanbul'un en çok ziyaret edilen yerleri arasındadır.",
    "Nasi goreng dibuat dari nasi putih yang digoreng dengan bawang, kecap manis, dan telur.",
    "ERROR 2024-03-01T12:00:03Z worker-7 timeout after 30000 ms; retry 3/5 (queue=ingest, id=af91c2)",
    "1. Preheat the oven to 200 °C. 2. Slice the vegetables. 3. Roast for 25 minutes, turning once.",
]


def calibration_texts(query_prefix: str = "query: ", passage_prefix: str = "passage: ") -> list[str]:
    """The calibration set as the model sees it: with the E5 prefixes, plus bare texts and fragments."""
    bare = ["E5", "🙂 thanks!", "x" * 40]
    return ([query_prefix + q for q in QUERIES] + [passage_prefix + p for p in PASSAGES]
            + PASSAGES[:6] + bare)


def ranges_texts(query_prefix: str = "query: ", passage_prefix: str = "passage: ") -> list[str]:
    """The texts whose embeddings fix the per-dimension int8/uint8 ranges (export/build.py write_ranges):
    the same disjoint set, every text with and without its prefix, as users embed both ways."""
    return calibration_texts(query_prefix, passage_prefix) + QUERIES + PASSAGES[6:]
