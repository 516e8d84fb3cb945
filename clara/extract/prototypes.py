"""A fallback attribute keyer: nearest hand-written prototype over sentence embeddings.

The rules of `clara.extract.attributes` key most statements about a person's attribute, but
people say these things in endless ways ("signed up at the sports centre", "peguei gosto pelo
xadrez"). For a statement the rules leave unkeyed, this module compares the sentence embedding
with short generic prototype statements per attribute (en/es/pt/fr/de, written for this module)
and with prototypes of things that are NOT attributes (plans, events, small talk, opinions). A
class is accepted only when its best cosine is above `threshold` and beats the runner-up
(including the not-an-attribute class) by `margin` — a wrong key would supersede a true fact,
so unsure means no key.

The embedder is the store's (`storage.embeddings.Embedder`) when it is multilingual, else the
bundled multilingual `use-m3` when installed (`keyer_embedder`); prototype vectors are computed
once per keyer (on first use, in the caller's worker thread) and kept in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from clara.extract.attributes import _THIRD_PRONOUN, _subject, fold, is_question, sentences

# Written for this module; one line per prototype. Values are ordinary examples, never scenario
# text. Attribute names are those of clara.extract.attributes (favourite_* as favourite_thing()).
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "residence": (
        "ahora estamos viviendo en las afueras",
        "me fui a vivir con mi pareja a Valencia",
        "a gente se mudou para o interior",
        "agora estamos morando no centro",
        "she lives abroad now",
        "mi hermano vive ahora en Bilbao",
        "nos mudamos al centro",
        "a minha irmã mora em Lisboa agora",
        "mudamos de cidade no mês passado",
        "il habite maintenant à Marseille",
        "I live in Madrid now",
        "we bought a flat in another city and moved there",
        "home is Chicago these days",
        "I relocated to the countryside",
        "ahora vivo en Sevilla",
        "nos hemos ido a vivir a otra ciudad",
        "agora moro em Curitiba",
        "fui morar em outra cidade",
        "j'habite à Lyon maintenant",
        "ich wohne jetzt in Hamburg",
    ),
    "work": (
        "me han contratado en una consultora",
        "ya no trabajo allí, estoy buscando trabajo",
        "dejé la empresa el mes pasado",
        "comecei num emprego novo",
        "pedi demissão e estou procurando emprego",
        "he works at a hospital now",
        "she got hired by a law firm",
        "trabajo en una tienda de ropa",
        "ahora estoy en paro",
        "estoy sin trabajo desde marzo",
        "entré a trabajar en un banco",
        "trabalho numa loja",
        "estou desempregado",
        "saí da empresa",
        "er arbeitet bei Siemens",
        "I got a job at a bank",
        "I started working for a new company",
        "I work as an accountant",
        "I left my job and now I'm unemployed",
        "I'm a freelance designer now",
        "I joined a startup as an engineer",
        "me contrataron en una empresa de seguros",
        "ahora trabajo de contable",
        "dejé el trabajo",
        "fui contratado por uma empresa de tecnologia",
        "agora trabalho como professor",
        "j'ai trouvé un nouveau travail dans une banque",
        "je travaille comme infirmière",
        "ich habe eine neue Stelle bei einer Versicherung",
        "ich arbeite jetzt als Lehrer",
    ),
    "study": (
        "mi hijo ha empezado en un colegio nuevo",
        "hemos matriculado a la niña en otra escuela",
        "me aceptaron en la universidad",
        "estoy haciendo un máster en economía",
        "meu filho agora estuda numa escola pública",
        "fui aceito no mestrado",
        "she is doing a PhD in Boston",
        "I enrolled at a community college",
        "empecé la carrera de derecho",
        "me matriculé en la universidad",
        "mi hijo empieza en el instituto",
        "estou cursando engenharia",
        "minha filha entrou numa escola nova",
        "il est inscrit à la fac",
        "I'm studying law at university",
        "I got into a master's programme",
        "I switched universities",
        "my son started at a new school",
        "our daughter changed schools this year",
        "estudio medicina en la universidad",
        "mi hija va a otro colegio",
        "entrei na faculdade de direito",
        "meu filho mudou de escola",
        "j'étudie à la Sorbonne",
        "mon fils va dans une nouvelle école",
        "ich studiere jetzt an der Uni Wien",
        "meine Tochter geht auf eine andere Schule",
    ),
    "manager": (
        "ahora mi responsable es otra persona",
        "mi nuevo jefe se llama Andrés",
        "agora respondo a outra gerente",
        "tenho um chefe novo",
        "his manager is now Paul",
        "I have a new supervisor",
        "mi supervisor es Jorge",
        "trabajo bajo las órdenes de Marta",
        "meu gerente agora é o Carlos",
        "mein Vorgesetzter ist jetzt Herr Braun",
        "my new boss is Karen",
        "I report to a different manager now",
        "my team lead changed",
        "mi jefa ahora es Laura",
        "ahora respondo ante otro director",
        "minha chefe agora é a Paula",
        "mon nouveau chef s'appelle Marc",
        "meine Chefin ist jetzt Frau Weber",
    ),
    "partner": (
        "ya no estoy con mi novio",
        "lo hemos dejado",
        "estoy soltero otra vez",
        "ahora sale con un chico de su trabajo",
        "terminamos o namoro",
        "agora ela namora o Lucas",
        "estou solteira",
        "she is dating a guy from work",
        "he has a new boyfriend",
        "they got divorced",
        "sale con una chica de su clase",
        "está saliendo con Pablo",
        "me separé de mi marido",
        "ela está namorando o Pedro",
        "nos separamos",
        "elle est en couple avec Thomas",
        "I'm seeing someone new",
        "my girlfriend and I broke up",
        "I got married last month",
        "I'm single again",
        "tengo novio nuevo",
        "lo dejamos, ya no estamos juntos",
        "estou namorando um rapaz",
        "terminei o namoro",
        "je sors avec quelqu'un",
        "on s'est séparés",
        "ich habe eine neue Freundin",
        "wir haben uns getrennt",
    ),
    "pet": (
        "se ha llevado un cachorro a casa",
        "ahora tiene un gato",
        "adoptamos una perrita de un refugio",
        "pegamos um gato na rua",
        "ele adotou um cachorro",
        "she has a rabbit now",
        "they got a kitten from the animal shelter",
        "adopté un perro de la perrera",
        "tengo una tortuga",
        "ganhei um gatinho",
        "temos um cachorro chamado Thor",
        "il a un chien",
        "we adopted a puppy",
        "I have a cat named Luna",
        "our dog died last week",
        "adoptamos un gatito",
        "tenemos un perro nuevo",
        "adotei uma cachorrinha",
        "j'ai adopté un chat",
        "wir haben einen Hund bekommen",
    ),
    "car": (
        "ahora tengo un coche eléctrico",
        "me han entregado el coche nuevo",
        "agora tenho um carro elétrico",
        "peguei meu carro novo na concessionária",
        "she drives a Toyota now",
        "I got rid of my car",
        "ahora conduzco un Seat",
        "me he comprado una moto",
        "vendi meu carro",
        "agora dirijo um Honda",
        "il a vendu sa voiture",
        "I bought a new car",
        "I sold my car",
        "I drive an electric car now",
        "me compré un coche",
        "vendí el coche",
        "comprei um carro novo",
        "j'ai acheté une voiture",
        "ich habe mir ein neues Auto gekauft",
    ),
    "phone": (
        "her phone number is now 555 7788",
        "cambié de número de teléfono",
        "mi teléfono nuevo es el 611 222 333",
        "troquei de número",
        "o telefone dele agora é 21 98888 7777",
        "my new phone number is 555 0123",
        "I changed my mobile number",
        "mi número de móvil es el 600 123 456",
        "meu celular novo é 11 9999 0000",
        "mon numéro de portable a changé",
        "meine neue Handynummer ist 0170 123456",
    ),
    "email": (
        "his email is now john@example.org",
        "ahora uso otra dirección de correo",
        "troquei de e-mail",
        "agora uso outro endereço de email",
        "my email address is now name@example.com",
        "I use a different email address now",
        "mi correo nuevo es nombre@example.com",
        "meu email novo é nome@example.com",
        "mon adresse mail a changé",
        "meine neue E-Mail-Adresse ist name@example.de",
    ),
    "diet": (
        "ahora como de todo",
        "ya no soy vegetariana",
        "me he hecho vegana",
        "virei vegetariano",
        "agora como de tudo",
        "she is vegetarian now",
        "I cut out gluten",
        "ahora soy vegano",
        "dejé de comer carne",
        "sou vegetariana agora",
        "voltei a comer carne",
        "I stopped eating meat",
        "I went vegan",
        "I eat everything again",
        "ya no como carne",
        "me hice vegetariana",
        "parei de comer carne",
        "je ne mange plus de viande",
        "ich esse kein Fleisch mehr",
    ),
    "timezone": (
        "ahora me rijo por la hora de Tokio",
        "estoy con el horario de Buenos Aires",
        "agora sigo o horário de Nova York",
        "I am in Central European Time now",
        "ahora estoy en el horario de Nueva York",
        "uso el horario de Ciudad de México",
        "agora estou no horário de Lisboa",
        "I'm on Pacific time now",
        "my time zone is UTC+1",
        "estoy en la zona horaria de Madrid",
        "meu fuso horário é o de Brasília",
        "je suis sur l'heure de Paris",
        "meine Zeitzone ist MEZ",
    ),
    "gym": (
        "me he hecho socia de un gimnasio",
        "ahora entreno en un centro deportivo",
        "me matriculé en un club de natación",
        "entrei numa academia perto de casa",
        "she goes to a climbing gym now",
        "I got a membership at a sports club",
        "me hice socio de un club deportivo",
        "voy a un gimnasio nuevo",
        "agora treino numa academia nova",
        "me matriculei na academia do bairro",
        "I joined a new gym",
        "I signed up at the fitness centre",
        "me apunté a un gimnasio",
        "me inscrevi numa academia",
        "je me suis inscrit à la salle de sport",
        "ich bin jetzt in einem Fitnessstudio angemeldet",
    ),
    "appointment_time": (
        "prefiero que me citen por la tarde",
        "mejor reservarme a primera hora",
        "me viene mejor a mediodía",
        "me marque sempre de manhã cedo",
        "afternoons suit me better for meetings",
        "book my appointments in the evening",
        "mejor las citas por la mañana",
        "me vienen mejor las tardes para las citas",
        "prefiro marcar à tarde",
        "de preferência horários à noite",
        "mornings work better for my appointments",
        "please book me in the afternoon",
        "prefiero las citas por la tarde",
        "prefiro consultas de manhã",
        "je préfère les rendez-vous le matin",
        "Termine am Vormittag passen mir besser",
    ),
    "hobby": (
        "últimamente me ha dado por el punto de cruz",
        "me he aficionado al senderismo",
        "ahora paso los fines de semana pintando",
        "agora passo os fins de semana tocando violão",
        "me apaixonei pela jardinagem",
        "she took up painting",
        "he plays the piano in his free time",
        "ahora hago escalada los fines de semana",
        "mi nueva afición es la jardinería",
        "me encanta hacer punto últimamente",
        "comecei a jogar xadrez",
        "meu novo hobby é fotografia",
        "ando fazendo cerâmica",
        "j'ai commencé la poterie",
        "I took up climbing",
        "my hobby these days is gardening",
        "I spend my weekends knitting",
        "me aficioné a la fotografía",
        "en mi tiempo libre hago cerámica",
        "comecei a fazer yoga",
        "meu passatempo agora é pintar",
        "je me suis mis à la guitare",
        "mon loisir c'est la randonnée",
        "ich habe mit dem Töpfern angefangen",
        "in meiner Freizeit male ich",
    ),
    "language_learning": (
        "he empezado a estudiar portugués",
        "ahora estudio chino",
        "estoy con clases de ruso",
        "agora faço aulas de japonês",
        "comecei a aprender italiano",
        "she is taking Korean lessons",
        "I signed up for a German course",
        "empecé clases de inglés",
        "me apunté a clases de italiano",
        "comecei um curso de francês",
        "estou estudando alemão",
        "ich mache einen Spanischkurs",
        "I'm learning Japanese",
        "I started Italian classes",
        "estoy aprendiendo francés",
        "estou aprendendo inglês",
        "j'apprends l'espagnol",
        "ich lerne gerade Italienisch",
    ),
    "favourite_food": (
        "lo que más me gusta comer es la lasaña",
        "mi comida favorita ahora son los tacos",
        "meu prato preferido agora é moqueca",
        "o que eu mais gosto de comer é pizza",
        "he loves sushi more than anything",
        "lately I only want to eat ramen",
        "me encanta la pizza, es lo que más me gusta",
        "mi plato favorito es el gazpacho",
        "adoro comer pastel, é o meu preferido",
        "eu amo comer churrasco",
        "my favourite food is lasagne",
        "I'm crazy about pizza lately",
        "mi comida preferida es la paella",
        "minha comida favorita é lasanha",
        "mon plat préféré c'est le couscous",
        "mein Lieblingsessen ist Pizza",
    ),
    "favourite_band": (
        "ahora escucho a Bad Bunny sin parar",
        "estoy obsesionada con un grupo nuevo",
        "agora só escuto Marisa Monte",
        "estou viciado numa banda nova",
        "my favourite artist is Taylor Swift",
        "she listens to Beyoncé all the time",
        "escucho a Shakira todo el día",
        "mi cantante favorita es Rosalía",
        "não paro de ouvir Anitta",
        "meu cantor favorito é Caetano Veloso",
        "my favourite band is Coldplay",
        "I can't stop listening to this singer",
        "mi grupo favorito es Maná",
        "minha banda preferida é Skank",
        "mon groupe préféré c'est Indochine",
        "meine Lieblingsband ist Die Ärzte",
    ),
    "favourite_sport": (
        "ahora lo mío es el tenis",
        "me encanta ver el balonmano",
        "agora meu esporte é o basquete",
        "he is really into volleyball now",
        "my favourite sport to watch is cycling",
        "me encanta el pádel",
        "lo que más me gusta es el fútbol",
        "adoro jogar futebol",
        "mon sport favori est le rugby",
        "my favourite sport is tennis",
        "basketball is the sport I love most",
        "mi deporte favorito es el baloncesto",
        "meu esporte favorito é vôlei",
        "mon sport préféré c'est le handball",
        "mein Lieblingssport ist Handball",
    ),
    # Not an attribute: events, plans, opinions, feelings, small talk, requests.
    "": (
        "mañana tengo que madrugar",
        "el fin de semana fuimos a la playa",
        "he visto una serie muy buena",
        "este mes tengo mucho trabajo",
        "mi madre me llamó ayer",
        "no fim de semana fomos à praia",
        "amanhã tenho que acordar cedo",
        "vi um filme ótimo ontem",
        "minha mãe me ligou ontem",
        "my neighbour's cat is so loud",
        "my friend's dog is really cute",
        "my back hurts since the football match",
        "we're planning to redecorate the kitchen",
        "I'm helping a coworker with a report",
        "I have a doctor's appointment on Friday",
        "el perro de mi vecino ladra mucho",
        "me duele la espalda desde el partido",
        "estamos pensando en pintar la cocina",
        "o cachorro do vizinho late muito",
        "le chat des voisins miaule toute la nuit",
        "j'ai mal au dos depuis le match de foot",
        "on pense repeindre la cuisine",
        "j'ai un rendez-vous chez le médecin vendredi",
        "der Hund vom Nachbarn bellt ständig",
        "I bought a new lamp for the living room",
        "my knee hurts since the hike",
        "I have a meeting at 3",
        "I got a haircut today",
        "my phone battery died",
        "we ordered pizza last night",
        "I read an interesting article",
        "compré una lámpara nueva",
        "me duele la cabeza",
        "tengo una reunión a las tres",
        "comprei um liquidificador",
        "estou com dor de cabeça",
        "tenho uma reunião amanhã",
        "j'ai acheté une nouvelle lampe",
        "ich habe morgen einen Termin beim Arzt",
        "ich habe eine neue Lampe gekauft",
        "I went to the cinema yesterday",
        "we had dinner with friends on Saturday",
        "the weather is lovely today",
        "I'm tired after a long week",
        "I watched a great documentary",
        "I have a dentist appointment tomorrow",
        "thanks, that's helpful",
        "haha that's funny",
        "I need to buy groceries",
        "the meeting ran late",
        "I'm going on holiday next month",
        "my sister visited me last weekend",
        "ayer fui al cine",
        "hace mucho calor hoy",
        "estoy cansada",
        "gracias por la ayuda",
        "ontem fui ao mercado",
        "hoje está chovendo",
        "obrigado pela ajuda",
        "hier je suis allé au marché",
        "il fait beau aujourd'hui",
        "gestern war ich im Kino",
        "das Wetter ist heute schön",
    ),
}


# Per embedder (cosines are not comparable across models): (threshold, margin), measured on the
# dev scenarios of `clara bench current` (never holdout): the statements the rules leave unkeyed
# and the surrounding small talk. An embedder without an entry gets no prototype keying.
CALIBRATION: dict[str, tuple[float, float]] = {
    "use-m3": (0.35, 0.08),
    "minilm-l6-int8": (0.30, 0.10),
    "e5-small-ml-q4": (0.80, 0.03),
}


# The keyer's own embedder when the store's is not multilingual: Universal Sentence Encoder
# multilingual v3 (extra `multilingual`, in requirements.lock): 31 MB installed, ~1.8 s load,
# ~3 ms per sentence (clara/bench/results/embedders-perf-2026-12.txt). On the dev scenarios'
# unkeyed statements it keys 86 correctly (4 wrong) where MiniLM keys 54 (MiniLM barely
# separates Spanish or Portuguese sentences from one another).
MULTILINGUAL = frozenset({"use-m3", "e5-small-ml-q4"})
KEYER_MODEL = "use-m3"


def keyer_embedder(store_embedder: Any) -> Any:
    """The embedder to key with: the store's own if it is multilingual, else the local `use-m3`
    when it is installed, else the store's. Loads a model (seconds): call it off the event loop."""
    if getattr(store_embedder, "name", "") in MULTILINGUAL:
        return store_embedder
    try:
        from storage.embeddings import make_embedder

        return make_embedder("local", model=KEYER_MODEL)
    except (ImportError, ValueError, OSError):
        return store_embedder


@dataclass(frozen=True, slots=True)
class Keyed:
    """One statement the prototypes key: `attribute`, `subject` (None = the speaker, else the
    named person or "kin:<word>"), the sentence, its best cosine and its margin over the runner-up."""

    attribute: str
    subject: str | None
    sentence: str
    score: float
    margin: float


class PrototypeKeyer:
    """Nearest-prototype attribute classifier over an embedder's vectors.

    `embed(texts) -> array (len(texts), dim)` of unit rows (an `Embedder.embed_documents`).
    `threshold`, `margin`: cosine floor for the best class and its lead over the runner-up.
    """

    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray],
        *,
        threshold: float = 0.30,
        margin: float = 0.10,
        prototypes: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self._embed = embed
        self.threshold = threshold
        self.margin = margin
        self._protos = prototypes or PROTOTYPES
        self._lock = threading.Lock()
        self._matrix: np.ndarray | None = None
        self._labels: list[str] = []

    @classmethod
    def for_embedder(cls, embedder: Any) -> PrototypeKeyer | Literal[False]:
        """A keyer over `embedder.embed_documents` with its calibration, or False when
        `embedder.name` has none in CALIBRATION."""
        cal = CALIBRATION.get(getattr(embedder, "name", ""))
        if cal is None:
            return False
        return cls(embedder.embed_documents, threshold=cal[0], margin=cal[1])

    def _ready(self) -> tuple[np.ndarray, list[str]]:
        with self._lock:
            if self._matrix is None:
                labels = [a for a, ps in self._protos.items() for _ in ps]
                texts = [p for ps in self._protos.values() for p in ps]
                self._matrix = np.asarray(self._embed(texts), dtype=np.float32)
                self._labels = labels
            return self._matrix, self._labels

    def scores(self, texts: list[str]) -> list[dict[str, float]]:
        """Per text: {attribute ("" = not an attribute): best cosine with its prototypes}."""
        if not texts:
            return []
        matrix, labels = self._ready()
        sims = np.asarray(self._embed(texts), dtype=np.float32) @ matrix.T
        out = []
        for row in sims:
            best: dict[str, float] = {}
            for label, s in zip(labels, row.tolist(), strict=True):
                if s > best.get(label, -2.0):
                    best[label] = s
            out.append(best)
        return out

    def classify(self, text: str, names: Iterable[str] = ()) -> Keyed | None:
        """The one statement of a user turn the prototypes key confidently, or None.

        Questions and sentences opening with an unnamed third person ("she…") are skipped; the
        subject comes from `clara.extract.attributes` subject detection (`names`: known people).
        CPU-bound (one embedding call): run it off the event loop."""
        known = frozenset(fold(n) for n in names if n) or None
        cands: list[tuple[str, str | None]] = []
        for s, e in sentences(text):
            sent = text[s:e].strip()
            if len(sent.split()) < 3 or is_question(sent):
                continue
            subject, _ = _subject(sent, known)
            if subject is None and _THIRD_PRONOUN.match(fold(sent)):
                continue
            cands.append((sent, subject))
        if not cands:
            return None
        best: Keyed | None = None
        for (sent, subject), sc in zip(cands, self.scores([c[0] for c in cands]), strict=True):
            ranked = sorted(sc.items(), key=lambda kv: kv[1], reverse=True)
            (label, top), runner = ranked[0], ranked[1][1] if len(ranked) > 1 else -1.0
            if not label or top < self.threshold or top - runner < self.margin:
                continue
            if best is None or top > best.score:
                best = Keyed(label, subject, sent, top, top - runner)
        return best
