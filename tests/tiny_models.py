"""Tiny, random-weight stand-ins for the E5 model families, built fully offline.

The ONNX export pipeline is tested against these instead of the real
intfloat/e5-* checkpoints: the Hugging Face Hub is not reachable from the test
environment and the real models are far too large for unit tests. Each builder
writes a directory with ``save_pretrained`` layout (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) that ``transformers.AutoModel`` and
``transformers.AutoTokenizer`` load without network access.

The builders are deterministic: the same arguments produce byte-identical
``model.safetensors`` and ``tokenizer.json``. They only touch the torch RNG
inside ``torch.random.fork_rng`` so the caller's RNG state is left alone.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Iterator

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

# Small sizes shared by every variant: big enough to have real structure
# (several layers and heads), small enough that building takes well under a second.
_HIDDEN = 64
_LAYERS = 2
_HEADS = 4
_INTERMEDIATE = 128


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON with a stable layout so the output is reproducible."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def _save_model(model_factory: Any, config: Any, out: Path, seed: int) -> None:
    """Initialise a model from ``config`` under a fixed seed and save it.

    ``fork_rng`` keeps the seeding local, so tests that build a model do not
    change the global torch RNG seen by other tests.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_factory(config)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)


# ---------------------------------------------------------------------------
# WordPiece BERT (intfloat/e5-small, e5-small-v2, e5-base, ...)
# ---------------------------------------------------------------------------

_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Common English words, including those in the E5 model-card examples, so that
# e.g. "query: how much protein should a female eat" becomes whole-word pieces.
_ENGLISH_WORDS = """
query passage how much protein should a female eat male summit define definition
the of and to in is was for on that with as by at from it an be this which or are
have has had not but were they their his her she he we you your our them there been
what when where who why will would can could may might must do does did done make made
one two three four five six seven eight nine ten first second last next new old
year years day days time times week month people person man woman women men child children
general guideline average requirement requirements ages grams gram per see chart
need increase if expecting training marathon check out below each eating eat ate
english language learners learner highest high higher low lower point points mountain top
level levels meeting meetings series between leaders leader more less governments government
about after all also any because before being both down even get give go good great
here into just know like long look many most no now only other over own same so some
than then these think those through under up use used very want way well work world
water food health healthy body weight diet daily recommended amount amounts intake
model models text texts sentence sentences search retrieval embedding embeddings vector
question questions answer answers document documents information data number numbers
city country state national international history science research study studies
school university student students book books page pages write written read reading
city capital france paris germany berlin london china beijing japan tokyo russia moscow
small large big little short right left hand house home life live lived living
cdc cdcs you'll youll women's
""".split()

_SUBWORDS = """
##s ##es ##ed ##ing ##er ##ers ##est ##ly ##tion ##tions ##ment ##ments ##ness ##ful
##less ##able ##al ##ic ##ive ##ous ##ity ##ize ##ise ##ance ##ence ##y ##en ##an
##in ##on ##or ##ar ##ad ##at ##it ##is ##ist ##ism ##ry ##ty ##ve ##re ##le ##el
##ies ##ied ##ier ##iest ##ial ##ian ##ine ##ing ##ings ##ogy ##ical ##ally
un re pre dis in im non over out sub inter
""".split()


def _wordpiece_vocab() -> list[str]:
    """Build the WordPiece vocabulary in code (no hub file needed).

    Order: special tokens, single ASCII characters, their ``##`` continuations,
    then words/subwords. Every ASCII letter/digit/punctuation is reachable, so
    only non-ASCII characters map to ``[UNK]``.
    """
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab: list[str] = []
    seen: set[str] = set()
    for tok in [*_BERT_SPECIALS, *chars, *("##" + c for c in chars), *_ENGLISH_WORDS, *_SUBWORDS]:
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)
    return vocab


def _wordpiece_tokenizer(vocab: list[str]) -> Tokenizer:
    """Assemble a ``tokenizers`` pipeline equal to BERT-uncased's tokenizer.json."""
    tok = Tokenizer(
        models.WordPiece(
            vocab={t: i for i, t in enumerate(vocab)},
            unk_token="[UNK]",
            max_input_chars_per_word=100,
        )
    )
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    # Registering the specials as added tokens matches the hub tokenizer.json and
    # keeps raw `tokenizers` ids identical to what transformers produces.
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in _BERT_SPECIALS])
    return tok


def build_wordpiece_bert(out: Path, max_positions: int = 64, seed: int = 0) -> Path:
    """Build a tiny uncased-WordPiece ``BertModel`` like intfloat/e5-small(-v2).

    ``max_positions`` is both the model's ``max_position_embeddings`` and the
    tokenizer's ``model_max_length`` (BERT has no position offset).
    """
    from transformers import BertConfig, BertModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    vocab = _wordpiece_vocab()
    tok = _wordpiece_tokenizer(vocab)
    tok.save(str(out / "tokenizer.json"))
    # vocab.txt is what the hub e5 repos ship too; it lets the slow tokenizer load.
    (out / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")

    specials = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizerFast",
            "do_lower_case": True,
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "clean_up_tokenization_spaces": True,
            "model_max_length": max_positions,
            **specials,
        },
    )
    _write_json(out / "special_tokens_map.json", specials)

    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=_HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        intermediate_size=_INTERMEDIATE,
        max_position_embeddings=max_positions,
        type_vocab_size=2,
        pad_token_id=vocab.index("[PAD]"),
    )
    _save_model(BertModel, config, out, seed)
    return out


# ---------------------------------------------------------------------------
# SentencePiece-Unigram (XLM-R tokenizer): intfloat/multilingual-e5-*
# ---------------------------------------------------------------------------

_XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0, 1, 2, 3 as in XLM-R
_MASK = "<mask>"

# Varied multilingual sentences; recombined below into a few hundred lines.
_MULTILINGUAL_SENTENCES = [
    # English
    "query: how much protein should a female eat",
    "passage: As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day.",
    "query: summit define",
    "passage: Definition of summit for English Language Learners: the highest point of a mountain.",
    "The quick brown fox jumps over the lazy dog while the children watch from the window.",
    "Search engines rank documents by how relevant they are to the user's question.",
    # German
    "Wie viel Eiweiß sollte eine Frau jeden Tag essen, um gesund zu bleiben?",
    "Der Gipfel ist der höchste Punkt eines Berges, und die Aussicht dort oben ist großartig.",
    "Die Bundesregierung hat heute neue Maßnahmen für den Klimaschutz vorgestellt.",
    # French
    "Quelle quantité de protéines une femme doit-elle manger chaque jour ?",
    "Le sommet de la montagne était couvert de neige pendant tout l'hiver.",
    "Les étudiants de l'université préparent leurs examens à la bibliothèque.",
    # Spanish
    "¿Cuánta proteína debe comer una mujer adulta cada día?",
    "La cumbre de la montaña es el punto más alto, y el viento allí es muy fuerte.",
    "El gobierno anunció nuevas medidas económicas para el próximo año.",
    # Russian
    "Сколько белка должна съедать женщина каждый день?",
    "Вершина горы покрыта снегом почти круглый год.",
    "Москва является столицей России и крупнейшим городом страны.",
    # Chinese
    "女性每天应该吃多少蛋白质？",
    "山顶是山的最高点，从那里可以看到整个城市。",
    "北京是中国的首都，也是一座历史悠久的城市。",
    # Japanese
    "女性は一日にどれくらいのタンパク質を食べるべきですか？",
    "富士山の頂上からの景色はとても美しいです。",
    "東京は日本の首都で、世界でも有数の大都市です。",
    # Arabic
    "كم من البروتين يجب أن تأكل المرأة كل يوم؟",
    "قمة الجبل هي أعلى نقطة فيه، والمنظر من هناك رائع.",
    # Hindi
    "एक महिला को हर दिन कितना प्रोटीन खाना चाहिए?",
    "पहाड़ की चोटी सबसे ऊँचा स्थान होता है।",
    # Greek
    "Πόση πρωτεΐνη πρέπει να τρώει μια γυναίκα κάθε μέρα;",
    "Η κορυφή του βουνού είναι το υψηλότερο σημείο του.",
    # Mixed / numbers / punctuation
    "Numbers like 12, 345 and 6789 appear in text: 3.14, 2024-01-01, 50% off!",
    # --- more of each language, so the trainer can reach ~1000 pieces ---
    # English
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen.",
    "The library opens at nine o'clock every morning except on public holidays.",
    "Researchers measured the temperature of the ocean at different depths during the expedition.",
    "A balanced breakfast usually contains eggs, whole grain bread, fruit and yogurt.",
    "Please remember to bring your passport, tickets and a charger for the journey.",
    "Machine learning models transform sentences into dense vectors for semantic retrieval.",
    # German
    "Im Frühling blühen die Kirschbäume entlang des Flusses in der ganzen Stadt.",
    "Die Wissenschaftlerinnen untersuchten die Auswirkungen der Ernährung auf die Gesundheit.",
    "Könnten Sie mir bitte sagen, wie ich zum Hauptbahnhof komme?",
    "Unsere Nachbarn fahren jedes Jahr mit dem Fahrrad an die Nordsee.",
    # French
    "Nous avons visité le musée du Louvre et admiré des tableaux magnifiques.",
    "La boulangerie du quartier vend des croissants chauds tous les matins.",
    "Les chercheurs ont publié une nouvelle étude sur le changement climatique.",
    "Pourriez-vous m'indiquer le chemin de la gare, s'il vous plaît ?",
    # Spanish
    "Los niños juegan al fútbol en el parque después de la escuela.",
    "Mi abuela prepara una paella deliciosa todos los domingos.",
    "La biblioteca nacional conserva manuscritos antiguos muy valiosos.",
    "¿Podrías recomendarme un buen restaurante cerca del centro histórico?",
    # Russian
    "Зимой в Сибири температура опускается ниже сорока градусов.",
    "Студенты готовятся к экзаменам в университетской библиотеке.",
    "Мы поехали на поезде из Санкт-Петербурга во Владивосток.",
    "Учёные изучают влияние питания на здоровье человека.",
    # Chinese
    "春天来了，公园里的花都开了，很多人去散步。",
    "科学家们正在研究气候变化对海洋生物的影响。",
    "我每天早上喝一杯咖啡，然后坐地铁去上班。",
    "这家餐厅的饺子非常好吃，价格也很便宜。",
    # Japanese
    "私は毎朝コーヒーを飲んでから電車で会社に行きます。",
    "桜の季節になると、多くの人が公園で花見を楽しみます。",
    "研究者たちは気候変動が海の生き物に与える影響を調べています。",
    "この図書館には古い本がたくさん保存されています。",
    # Arabic
    "يذهب الطلاب إلى المكتبة كل صباح للدراسة والقراءة.",
    "تقع مدينة القاهرة على ضفاف نهر النيل في مصر.",
    "يدرس العلماء تأثير التغذية على صحة الإنسان.",
    # Hindi
    "दिल्ली भारत की राजधानी है और यहाँ बहुत सारे ऐतिहासिक स्थान हैं।",
    "बच्चे स्कूल के बाद पार्क में क्रिकेट खेलते हैं।",
    "वैज्ञानिक जलवायु परिवर्तन के प्रभावों का अध्ययन कर रहे हैं।",
    # Greek
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και έχει μεγάλη ιστορία.",
    "Οι μαθητές διαβάζουν στη βιβλιοθήκη κάθε απόγευμα.",
    "Οι επιστήμονες μελετούν την επίδραση της διατροφής στην υγεία.",
]


def _multilingual_corpus() -> Iterator[str]:
    """Yield a deterministic few-hundred-line training corpus.

    Sentences are paired with varying partners so the trainer sees
    cross-sentence substrings and has enough material for ~1500 pieces.
    """
    n = len(_MULTILINGUAL_SENTENCES)
    for rep in range(3):
        yield from _MULTILINGUAL_SENTENCES
        for i in range(n):
            j = (i * 7 + rep * 5 + 3) % n
            yield _MULTILINGUAL_SENTENCES[i] + "  " + _MULTILINGUAL_SENTENCES[j]
    for i in range(n):
        # Word-level shuffles give the EM more distinct contexts.
        words = _MULTILINGUAL_SENTENCES[i].split()
        yield " ".join(reversed(words))
        yield " ".join(words[::2])


def _canonical_unigram(tok: Tokenizer, digits: int = 6) -> models.Unigram:
    """Return the trained Unigram model with reproducible scores and order.

    ``UnigramTrainer`` is not bit-reproducible: it sums floats in hash-map order
    (scores differ in the last bits between runs) and, in its final step, gives
    every required character that the EM dropped the score
    ``min_score + k * 1e-4`` with ``k`` following hash-set order. The piece set
    itself is stable, so we (1) hand those grid scores back to the re-added
    characters in code-point order, (2) round all scores and (3) sort by
    (score, piece). That makes tokenizer.json byte-identical between runs; the
    special tokens keep ids 0..3.
    """
    model = json.loads(tok.to_str())["model"]
    n_special = len(_XLMR_SPECIALS)
    pieces = [(p, float(s)) for p, s in model["vocab"]]
    specials, rest = pieces[:n_special], pieces[n_special:]
    if [p for p, _ in specials] != _XLMR_SPECIALS:  # pragma: no cover - guards a tokenizers behaviour change
        raise RuntimeError(f"unexpected leading pieces {specials}")

    floor, step = min(s for _, s in rest), 1e-4

    def on_grid(score: float) -> bool:
        k = (score - floor) / step
        return abs(k - round(k)) < 1e-2

    readded = [i for i, (p, s) in enumerate(rest) if len(p) == 1 and on_grid(s)]
    chars = sorted(rest[i][0] for i in readded)
    grid = sorted((rest[i][1] for i in readded), reverse=True)
    for i, (c, sc) in zip(readded, zip(chars, grid)):
        rest[i] = (c, sc)

    rest = sorted(((p, round(s, digits)) for p, s in rest), key=lambda ps: (-ps[1], ps[0]))
    specials = [(p, round(s, digits)) for p, s in specials]
    return models.Unigram(specials + rest, unk_id=model["unk_id"], byte_fallback=False)


def _unigram_tokenizer(vocab_size: int = 1500) -> Tokenizer:
    """Train an XLM-R style SentencePiece-Unigram tokenizer with ``tokenizers``."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_XLMR_SPECIALS),
        unk_token="<unk>",
        show_progress=False,
        max_piece_length=16,
    )
    tok.train_from_iterator(_multilingual_corpus(), trainer=trainer)
    tok.model = _canonical_unigram(tok)
    vocab = tok.get_vocab(with_added_tokens=True)
    for want_id, t in enumerate(_XLMR_SPECIALS):
        if vocab.get(t) != want_id:  # pragma: no cover - guards a tokenizers behaviour change
            raise RuntimeError(f"expected {t!r} at id {want_id}, got {vocab.get(t)}")
    bos, eos = vocab["<s>"], vocab["</s>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    # XLM-R appends <mask> after the sentencepiece vocab; lstrip as in the hub file.
    tok.add_special_tokens([AddedToken(_MASK, lstrip=True, rstrip=False, normalized=False, special=True)])
    return tok


def build_unigram(out: Path, arch: str = "bert", max_tokens: int = 64, seed: int = 0) -> Path:
    """Build a tiny model with an XLM-R (SentencePiece-Unigram) tokenizer.

    ``arch="bert"`` mirrors intfloat/multilingual-e5-small, which is a
    ``BertModel`` (positions start at 0) behind an XLM-R tokenizer.
    ``arch="xlm-roberta"`` mirrors multilingual-e5-base/large: an
    ``XLMRobertaModel`` whose positions start at ``padding_idx + 1 == 2``, so it
    needs ``max_tokens + 2`` position rows to hold ``max_tokens`` tokens.
    """
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    if arch not in ("bert", "xlm-roberta"):
        raise ValueError(f"arch must be 'bert' or 'xlm-roberta', got {arch!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    tok = _unigram_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    pad_id = tok.token_to_id("<pad>")

    mask_token = {
        "content": _MASK,
        "lstrip": True,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }
    specials = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": mask_token,
    }
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "XLMRobertaTokenizerFast",
            "clean_up_tokenization_spaces": True,
            "model_max_length": max_tokens,
            **specials,
        },
    )
    _write_json(out / "special_tokens_map.json", specials)

    sizes = dict(
        vocab_size=vocab_size,
        hidden_size=_HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        intermediate_size=_INTERMEDIATE,
        pad_token_id=pad_id,
        bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("</s>"),
    )
    if arch == "bert":
        config = BertConfig(max_position_embeddings=max_tokens, type_vocab_size=2, **sizes)
        _save_model(BertModel, config, out, seed)
    else:
        config = XLMRobertaConfig(max_position_embeddings=max_tokens + 2, type_vocab_size=1, **sizes)
        _save_model(XLMRobertaModel, config, out, seed)
    return out
