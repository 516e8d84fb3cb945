"""Attribute statements and questions, offline, in English, Spanish, Portuguese, French and German.

Facts about people change: where they live, where and as what they work, what they study, who
their manager or partner is, their pet, car, phone, email, handle, favourite things, diet, time
zone, gym, preferred appointment time, hobby, the language they are learning, their name and age.
Such a statement is keyed by (subject, attribute) — "alice/residence", "anna/work" — so that a later
statement on the same key supersedes the earlier one, whether it gives a new value ("I moved to
Porto") or only ends the old one ("I quit my job", "we broke up", "I don't have a car anymore").
The same classifier reads questions ("where do I live?", "¿a qué te dedicas?", "what was my old
job?") so recall can ask for the facts holding a key even when they share no word with the question.

Everything works on text folded to lower case without accents (`fold`), so one pattern covers
"dónde"/"donde" and "Mudé"/"mude". Patterns name the predicate; the subject is the speaker (first
person, or no explicit subject in a language that drops it) unless the sentence opens with a named
person or "my sister (Anna)" / "mi hermana" / "minha irmã" / "ma sœur" / "meine Schwester".
Pure functions, no I/O, microseconds per sentence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# --------------------------------------------------------------------------- text folding


def fold(text: str) -> str:
    """Lower case, accents removed, typographic apostrophes straightened: "¿Dónde VIVÍA?" → "¿donde vivia?"."""
    t = unicodedata.normalize("NFKD", text.replace("’", "'").replace("ß", "ss"))
    return "".join(c for c in t if not unicodedata.combining(c)).casefold()


def _rx(*parts: str) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in parts))


def _words(*items: str) -> str:
    """An alternation of words/phrases (longest first), each as a whole word."""
    alts = sorted({w for item in items for w in item.split("|") if w}, key=len, reverse=True)
    return r"\b(?:" + "|".join(re.escape(a).replace(r"\ ", r"\s+") for a in alts) + r")\b"


# --------------------------------------------------------------------------- lexicons
OCCUPATIONS = _words(
    # en
    "nurse|teacher|engineer|software engineer|developer|programmer|doctor|physician|surgeon|dentist|lawyer|"
    "attorney|accountant|designer|architect|chef|cook|waiter|waitress|barista|bartender|pharmacist|scientist|"
    "researcher|professor|lecturer|journalist|writer|editor|photographer|electrician|plumber|carpenter|mechanic|"
    "driver|pilot|police officer|firefighter|paramedic|vet|veterinarian|therapist|psychologist|consultant|"
    "analyst|data scientist|manager|project manager|product manager|salesman|saleswoman|sales rep|cashier|"
    "librarian|translator|musician|artist|actor|actress|farmer|baker|hairdresser|cleaner|receptionist|secretary|"
    "tutor|social worker|civil servant|banker|economist|marketer|recruiter|entrepreneur|freelancer|intern|"
    "nanny|caregiver|carer|midwife|optician|physio|physiotherapist|courier|tester|sysadmin|devops engineer|"
    # es
    "enfermero|enfermera|profesor|profesora|maestro|maestra|ingeniero|ingeniera|desarrollador|desarrolladora|"
    "programador|programadora|medico|medica|abogado|abogada|contador|contadora|contable|disenador|disenadora|"
    "arquitecto|arquitecta|cocinero|cocinera|camarero|camarera|mesero|mesera|farmaceutico|farmaceutica|"
    "cientifico|cientifica|investigador|investigadora|periodista|escritor|escritora|fotografo|fotografa|"
    "electricista|fontanero|carpintero|mecanico|conductor|conductora|piloto|policia|bombero|veterinario|"
    "veterinaria|psicologo|psicologa|consultor|consultora|analista|gerente|vendedor|vendedora|cajero|cajera|"
    "traductor|traductora|musico|artista|agricultor|panadero|panadera|peluquero|peluquera|recepcionista|"
    "secretaria|funcionario|funcionaria|economista|autonomo|autonoma|becario|becaria|odontologo|odontologa|"
    # pt
    "enfermeiro|enfermeira|professora|engenheiro|engenheira|desenvolvedor|desenvolvedora|programadora|"
    "advogado|advogada|contadora|designer|arquiteto|arquiteta|cozinheiro|cozinheira|garcom|garconete|"
    "farmaceutico|cientista|pesquisador|pesquisadora|jornalista|escritora|fotografo|eletricista|encanador|"
    "mecanico|motorista|policial|bombeiro|veterinaria|psicologo|psicologa|consultora|analista|vendedora|"
    "caixa|tradutora|musico|padeiro|cabeleireiro|cabeleireira|recepcionista|secretaria|dentista|estagiario|"
    # fr
    "infirmier|infirmiere|professeur|professeure|enseignant|enseignante|instituteur|institutrice|ingenieur|"
    "ingenieure|developpeur|developpeuse|programmeur|programmeuse|medecin|avocat|avocate|comptable|"
    "designer|architecte|cuisinier|cuisiniere|serveur|serveuse|pharmacien|pharmacienne|chercheur|chercheuse|"
    "journaliste|ecrivain|photographe|electricien|plombier|menuisier|mecanicien|chauffeur|policier|pompier|"
    "veterinaire|psychologue|consultante|analyste|vendeur|vendeuse|caissier|caissiere|traducteur|traductrice|"
    "musicien|musicienne|boulanger|boulangere|coiffeur|coiffeuse|secretaire|fonctionnaire|stagiaire|dentiste|"
    # de
    "krankenpfleger|krankenschwester|pflegerin|lehrer|lehrerin|ingenieur|ingenieurin|entwickler|entwicklerin|"
    "programmierer|programmiererin|arzt|arztin|anwalt|anwaltin|buchhalter|buchhalterin|architektin|koch|kochin|"
    "kellner|kellnerin|apotheker|apothekerin|forscher|forscherin|journalistin|fotograf|fotografin|elektriker|"
    "klempner|tischler|mechaniker|fahrer|fahrerin|polizist|polizistin|feuerwehrmann|tierarzt|tierarztin|"
    "psychologin|beraterin|berater|verkaufer|verkauferin|kassierer|kassiererin|ubersetzer|ubersetzerin|"
    "musiker|musikerin|backer|backerin|friseur|friseurin|sekretarin|beamter|beamtin|praktikant|praktikantin|"
    "zahnarzt|zahnarztin|softwareentwickler|softwareentwicklerin"
)
KIN_SUBJECT = _words(
    "sister|brother|mother|mum|mom|father|dad|son|daughter|wife|husband|partner|girlfriend|boyfriend|friend|"
    "best friend|cousin|aunt|uncle|niece|nephew|grandmother|grandma|granny|grandfather|grandpa|boss|manager|"
    "colleague|coworker|co-worker|neighbour|neighbor|roommate|flatmate|kid|child|baby|"
    "hermana|hermano|madre|mama|padre|papa|hijo|hija|esposa|esposo|marido|mujer|novia|novio|pareja|amiga|amigo|"
    "prima|primo|tia|tio|abuela|abuelo|jefe|jefa|companera|companero|vecina|vecino|"
    "irma|irmao|mae|pai|filho|filha|namorada|namorado|avo|chefe|colega|vizinha|vizinho|"
    "soeur|frere|mere|pere|fils|fille|femme|mari|copine|copain|amie|ami|cousine|cousin|tante|oncle|grand-mere|"
    "grand-pere|patron|patronne|collegue|voisine|voisin|"
    "schwester|bruder|mutter|vater|sohn|tochter|frau|mann|freundin|freund|cousine|tante|onkel|oma|opa|chef|"
    "chefin|kollegin|kollege|nachbarin|nachbar"
)
_POSS = r"\b(?:my|our|mi|mis|nuestra|nuestro|meu|minha|nosso|nossa|ma|mon|mes|notre|mein|meine|meinen|meinem|unser|unsere)\b"
CAR_WORDS = _words(
    "car|suv|van|truck|pickup|motorbike|motorcycle|scooter|hatchback|sedan|estate|convertible|jeep|tesla|toyota|"
    "honda|ford|volkswagen|vw|golf|polo|bmw|audi|mercedes|fiat|renault|peugeot|citroen|seat|skoda|kia|hyundai|"
    "nissan|mazda|volvo|subaru|mini|prius|civic|corolla|yaris|clio|model 3|model y|coche|carro|auto|automovil|"
    "furgoneta|moto|voiture|bagnole|wagen|kombi"
)
PET_WORDS = _words(
    "dog|puppy|cat|kitten|parrot|rabbit|bunny|hamster|guinea pig|fish|goldfish|turtle|tortoise|horse|snake|"
    "lizard|ferret|budgie|perro|perrito|perra|gato|gatito|gata|loro|conejo|hamster|tortuga|caballo|cachorro|cao|"
    "cadela|papagaio|coelho|chien|chienne|chiot|chat|chatte|chaton|lapin|perroquet|cheval|hund|hundin|welpe|"
    "katze|kater|katzchen|kaninchen|papagei|pferd|mascota"
)
LANGUAGES = _words(
    "english|spanish|portuguese|french|german|italian|japanese|chinese|mandarin|korean|russian|arabic|dutch|"
    "swedish|greek|turkish|hindi|polish|ingles|espanol|castellano|portugues|frances|aleman|italiano|japones|"
    "chino|coreano|ruso|arabe|holandes|espanhol|alemao|japones|anglais|espagnol|portugais|allemand|italien|"
    "japonais|chinois|englisch|spanisch|portugiesisch|franzosisch|deutsch|italienisch|japanisch|chinesisch"
)
DIETS = _words(
    "vegetarian|vegan|pescatarian|pescetarian|keto|paleo|gluten free|gluten-free|dairy free|lactose free|"
    "vegetariano|vegetariana|vegano|vegana|pescetariano|vegetarien|vegetarienne|vegetalien|vegetalienne|"
    "vegetarier|vegetarierin|veganer|veganerin"
)
TIME_OF_DAY = _words(
    "morning|mornings|afternoon|afternoons|evening|evenings|night|early|late|weekend|weekends|lunchtime|"
    "manana|mananas|tarde|tardes|noche|noches|fin de semana|manha|manhas|noite|noites|matin|matinee|"
    "apres-midi|soir|soiree|morgens|vormittag|vormittags|nachmittag|nachmittags|abend|abends|wochenende"
)

# Favourite things: the word as said → the canonical thing.
FAVOURITE_THINGS = {
    "food": "food|dish|meal|cuisine|snack|comida|plato|comida favorita|prato|plat|nourriture|cuisine|essen|gericht",
    "colour": "colour|color|cor|couleur|farbe",
    "band": "band|group|artist|singer|musician|grupo|banda|cantante|cantor|cantora|groupe|chanteur|chanteuse|"
    "sanger|sangerin",
    "song": "song|track|cancion|musica|chanson|lied",
    "movie": "movie|film|pelicula|filme",
    "book": "book|novel|libro|livro|livre|roman|buch",
    "sport": "sport|deporte|esporte|desporto",
    "team": "team|club|equipo|time|equipe|verein|mannschaft",
    "drink": "drink|beverage|bebida|boisson|getrank",
    "show": "show|series|tv show|serie|programa",
    "game": "game|video game|juego|videojuego|jogo|jeu|spiel",
    "season": "season|estacion|estacao|saison|jahreszeit",
    "place": "place|city|country|lugar|sitio|cidade|pais|endroit|ville|ort|stadt",
    "restaurant": "restaurant|restaurante",
    "animal": "animal|tier",
    "flower": "flower|flor|fleur|blume",
    "author": "author|writer|autor|autora|auteur",
}
_THING_OF = {w: k for k, ws in FAVOURITE_THINGS.items() for w in ws.split("|")}
_THING_WORDS = _words(*FAVOURITE_THINGS.values())


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One attribute: statement patterns (any of them keys a sentence) and question cues."""

    name: str
    statement: re.Pattern
    question: re.Pattern


_V = r"(?:\s+(?:now|currently|still|actually|finally|just|also|recently|ahora|agora|maintenant|jetzt|nun|ya|aun|todavia|ainda|encore|noch))?"

SPECS: tuple[AttributeSpec, ...] = (
    AttributeSpec(
        "residence",
        _rx(
            rf"\b(?:live|lives|living|lived|reside|resides|residing|stay|stays|staying){_V}\s+(?:in|at|near)\b",
            r"\b(?:based|settled)\s+(?:in|near|out of)\b",
            r"\b(?:moved|move|moving|moves|relocated|relocating|relocate)\s+(?:back\s+)?(?:to|into|from|out|away|house|abroad)\b",
            r"\b(?:my|our|her|his|their)\s+(?:home|house|flat|apartment|place)\s+(?:is|'s|are)\s+(?:now\s+)?in\b",
            r"\bnew\s+(?:flat|apartment|house|place|home)\s+in\b",
            # es
            r"\b(?:vivo|vive|vives|vivimos|viven|vivia|vivio|resido|reside|residimos)\b(?:\s+\w+)?\s+(?:en|cerca)\b",
            r"\b(?:me|nos|se|te)\s+(?:he\s+|hemos\s+|ha\s+|han\s+)?(?:mude|mudamos|mudo|mudaron|mudado|mudare|mudaremos|fui|fuimos|fue)\s+(?:a|de|para|a\s+vivir)\b",
            r"\bestoy\s+viviendo\b|\bmi\s+casa\s+(?:esta|queda)\b",
            # pt
            r"\b(?:moro|mora|moramos|moram|morava|vivo|vive|vivemos)\s+(?:em|no|na|nos|nas|perto)\b",
            r"\b(?:me\s+)?mudei(?:-me)?\s+(?:para|pra|de)\b|\bmudamos\s+(?:para|pra)\b|\bse\s+mudou\s+(?:para|pra)\b|\bmudou-se\b",
            r"\bestou\s+morando\b|\bvou\s+morar\b",
            # fr
            r"\b(?:j'habite|habite|habites|habitons|habitent|habitait)\b|\bje\s+vis\s+(?:a|en|au|aux|pres)\b|\b(?:vit|vivons|vivent)\s+(?:a|en|au|aux)\b",
            r"\bdemenage\b|\bdemenagement\b|\b(?:je\s+me\s+suis|nous\s+nous\s+sommes|s'est)\s+installes?\b",
            # de
            r"\b(?:wohne|wohnt|wohnen|wohnte|lebe|lebt|leben|lebte)\s+(?:\w+\s+)?(?:in|im|bei|nahe|jetzt|nun|seit|nicht)\b",
            r"\b(?:gezogen|umgezogen|ziehe|zieht)\b",
        ),
        _rx(
            r"\bwhere\b.*\b(?:live|lives|living|lived|home|based|stay|stays|moved|reside|resides)\b",
            r"\b(?:what|which)\s+(?:city|town|country|place|neighbou?rhood)\b.*\b(?:live|lives|in|from|home)\b",
            r"\b(?:home\s+town|hometown|address|whereabouts)\b",
            r"\bdonde\b.*\b(?:vivo|vive|vives|vivia|vivimos|viven|resid\w*|mude|mudo|casa)\b|\ben\s+que\s+ciudad\b",
            r"\bonde\b.*\b(?:moro|mora|moram|morava|vivo|vive|vivia|casa)\b|\bem\s+que\s+cidade\b",
            r"\bou\b.*\b(?:habite|habites|habitait|vis|vit|vivait|demenage)\b|\bdans\s+quelle\s+ville\b|\bquelle\s+ville\b",
            r"\bwo\b.*\b(?:wohne|wohnst|wohnt|wohnte|lebe|lebst|lebt|lebte|hingezogen)\b|\bin\s+welcher\s+stadt\b",
        ),
    ),
    AttributeSpec(
        "work",
        _rx(
            rf"\b(?:work|works|working|worked){_V}\s+(?:at|for|in|as|with|from|on)\b",
            r"\b(?:my|her|his|their)\s+(?:job|work|employer|company|position|role|career|profession|occupation)\b",
            r"\b(?:job|position|role|gig|internship|post)\s+(?:at|as|with|in)\b",
            r"\bemployed\s+(?:at|by|as)\b|\b(?:hired|promoted)\b|\bjoined\s+(?:the\s+)?[a-z0-9]",
            r"\b(?:got|landed|started|start|starting|began|took|accepted|found)\s+(?:a|an|the|my|her|his)?\s*(?:new\s+)?(?:job|position|role|gig|internship|post)\b",
            r"\bstarted\s+(?:working|at)\b",
            r"\b(?:quit|quitting|left|leaving|resigned|retired|retire|fired|laid\s+off|sacked|let\s+go|unemployed|jobless|between\s+jobs)\b",
            r"\b(?:i|she|he|they|i'm|im|am|is|she's|he's)\s+(?:now\s+|still\s+)?(?:a|an)\s+(?:\w+\s+)?" + OCCUPATIONS,
            r"\bi\s+(?:teach|nurse|code|program)\b|\b(?:teaches|teaching)\s+\w+\s+(?:at|in)\b",
            r"\b(?:freelance|freelancing|self-employed|self\s+employed)\b",
            # es
            r"\b(?:trabajo|trabaja|trabajas|trabajamos|trabajan|trabajaba|trabaje)\s+(?:\w+\s+)?(?:en|para|como|de|con|desde)\b",
            r"\b(?:mi|su)\s+(?:trabajo|empleo|puesto|empresa|profesion|oficio|chamba|curro)\b",
            r"\b(?:soy|es|eres)\s+(?:\w+\s+)?" + OCCUPATIONS,
            r"\b(?:deje|renuncie|dimiti|me\s+despidieron|perdi|encontre|consegui|empece|comence)\b.*\b(?:trabajo|empleo|puesto|trabajar)\b",
            r"\bme\s+(?:contrataron|despidieron|jubile|ascendieron)\b|\bestoy\s+(?:desempleado|desempleada|en\s+paro|jubilado|jubilada)\b",
            r"\b(?:doy\s+clases|ensen[oa])\b",
            # pt
            r"\b(?:trabalho|trabalha|trabalhamos|trabalham|trabalhava)\s+(?:\w+\s+)?(?:em|na|no|para|como|de|com)\b",
            r"\b(?:meu|minha)\s+(?:trabalho|emprego|cargo|empresa|profissao)\b",
            r"\b(?:sou|e)\s+(?:\w+\s+)?" + OCCUPATIONS,
            r"\b(?:pedi\s+demissao|fui\s+demitid[oa]|me\s+demiti|sai\s+d[oa]|comecei\s+a\s+trabalhar|dou\s+aulas|estou\s+desempregad[oa])\b",
            # fr
            r"\b(?:je\s+travaille|travaille|travailles|travaillons|travaillent|travaillait)\s+(?:\w+\s+)?(?:chez|a|au|pour|comme|dans|en)\b",
            r"\b(?:mon|ma|son|sa)\s+(?:travail|boulot|emploi|poste|metier|entreprise|job)\b",
            r"\b(?:je\s+suis|il\s+est|elle\s+est)\s+(?:\w+\s+)?" + OCCUPATIONS,
            r"\b(?:j'ai|il\s+a|elle\s+a)\s+(?:quitte|demissionne|ete\s+licencie|perdu|trouve|commence)\b|\bj'enseigne\b|\bau\s+chomage\b",
            # de
            r"\b(?:arbeite|arbeitet|arbeiten|arbeitete)\s+(?:\w+\s+)?(?:bei|fur|als|in|im|an|seit)\b",
            r"\b(?:mein|meine|meinen)\s+(?:job|arbeit|stelle|beruf|arbeitgeber|firma)\b",
            r"\b(?:ich\s+bin|er\s+ist|sie\s+ist)\s+(?:\w+\s+)?" + OCCUPATIONS,
            r"\b(?:gekundigt|gekuendigt|entlassen|arbeitslos|kundige|unterrichte|angefangen|eingestellt)\b",
        ),
        _rx(
            r"\b(?:job|jobs|work|works|working|occupation|profession|career|employer|employed|company|living|"
            r"workplace|office|position|role)\b",
            r"\bwhat\s+(?:do|does|did)\s+(?:i|you|he|she|they|\w+)\s+do\b",
            r"\b(?:trabajo|trabajas|trabaja|trabajaba|empleo|profesion|oficio|dedico|dedicas|dedica|empresa|curro|chamba)\b",
            r"\b(?:trabalho|trabalhas|trabalha|trabalhava|emprego|profissao|faco|faz)\b",
            r"\b(?:travail|travailles|travaille|travaillait|boulot|emploi|metier|profession|fais|fait)\b",
            r"\b(?:arbeit|arbeite|arbeitest|arbeitet|beruf|job|stelle|arbeitgeber|firma)\b",
        ),
    ),
    AttributeSpec(
        "study",
        _rx(
            r"\b(?:study|studies|studying|studied|major|majoring|enrolled|enrol|enroll|attend|attends|attending)\b",
            r"\b(?:go|goes|going|started|start|starts|starting|transferred|moved|switched|changed)\s+(?:back\s+)?(?:to|at)\s+(?:\w+\s+){0,3}(?:school|university|uni|college|academy|kindergarten|nursery|daycare|grad\s+school|elementary|primary|preschool|pre-school|montessori|high|secondary|middle|gymnasium|institute)\b",
            r"\b(?:school|university|uni|college|kindergarten|nursery|daycare|class|degree|masters|phd|bachelor's|course)\b.*\b(?:at|in)\b",
            r"\b(?:student|pupil)\s+(?:at|of|in)\b|\b(?:graduated|dropped\s+out|new\s+school)\b",
            # es / pt / fr / de
            r"\b(?:estudio|estudia|estudias|estudiamos|estudiaba|estudie|estudo|estuda|estudei|etudie|etudies|etudient|etudiait|studiere|studiert|studieren|studierte)\b",
            r"\b(?:va|voy|vamos|van|empezo|empece|entro|entre|vai|vou|comecou|entrou|va|vais|est|ist|geht|gehe|wechselt|kommt)\b.*\b(?:escuela|colegio|universidad|facultad|instituto|guarderia|escola|faculdade|universidade|creche|ecole|college|lycee|universite|fac|creche|schule|universitat|uni|gymnasium|kita|kindergarten|grundschule)\b",
            r"\b(?:me\s+gradue|termine\s+la\s+carrera|me\s+formei|diplome|diplomee|abschluss)\b",
        ),
        _rx(
            r"\b(?:study|studies|studying|studied|school|university|uni|college|major|degree|course|kindergarten|nursery|daycare|class)\b",
            r"\b(?:estudio|estudias|estudia|escuela|colegio|universidad|carrera|facultad|instituto|guarderia)\b",
            r"\b(?:estudo|estudas|estuda|escola|faculdade|universidade|curso|creche)\b",
            r"\b(?:etudie|etudies|etudes|ecole|universite|fac|lycee|creche)\b",
            r"\b(?:studiere|studierst|studiert|studium|schule|universitat|kita|kindergarten)\b",
        ),
    ),
    AttributeSpec(
        "manager",
        _rx(
            r"\b(?:my|her|his)\s+(?:new\s+)?(?:boss|manager|supervisor|line\s+manager|team\s+lead|team\s+leader|lead)\b",
            r"\b(?:is|'s)\s+(?:now\s+)?(?:my|her|his)\s+(?:new\s+)?(?:boss|manager|supervisor|line\s+manager|team\s+lead)\b",
            r"\breport(?:s|ing)?\s+(?:directly\s+)?to\b",
            r"\b(?:mi|su)\s+(?:nuevo\s+|nueva\s+)?(?:jefe|jefa|gerente|supervisor|supervisora|responsable)\b",
            r"\b(?:meu|minha)\s+(?:novo\s+|nova\s+)?(?:chefe|gerente|supervisor|supervisora)\b",
            r"\b(?:mon|ma)\s+(?:nouveau\s+|nouvelle\s+)?(?:chef|cheffe|patron|patronne|manager|responsable|superieur)\b",
            r"\b(?:mein|meine)\s+(?:neuer\s+|neue\s+)?(?:chef|chefin|vorgesetzter|vorgesetzte|teamleiter|teamleiterin)\b",
        ),
        _rx(
            r"\b(?:boss|manager|supervisor|team\s+lead|report\s+to|reports\s+to)\b",
            r"\b(?:jefe|jefa|gerente|supervisor|supervisora|chefe|patron|patronne|chef|cheffe|responsable|vorgesetzte|vorgesetzter|chefin|teamleiter)\b",
        ),
    ),
    AttributeSpec(
        "partner",
        _rx(
            r"\b(?:my|her|his)\s+(?:new\s+)?(?:partner|girlfriend|boyfriend|wife|husband|fiance|fiancee|spouse)\s+(?:is|'s)\b",
            r"\b(?:is|'s)\s+(?:now\s+)?(?:my|her|his)\s+(?:new\s+)?(?:partner|girlfriend|boyfriend|wife|husband|fiance|fiancee|spouse)\b",
            r"\b(?:dating|seeing|going\s+out\s+with|married|engaged|together\s+with|in\s+a\s+relationship)\b",
            r"\b(?:broke\s+up|split\s+up|break\s+up|divorced|separated|single\s+again|we're\s+over|we\s+are\s+over|no\s+longer\s+together)\b",
            r"\b(?:mi|su)\s+(?:nueva\s+|nuevo\s+)?(?:novia|novio|pareja|esposa|esposo|marido|mujer|prometida|prometido)\s+(?:es|se\s+llama)\b",
            r"\b(?:salgo\s+con|estoy\s+saliendo\s+con|me\s+case|nos\s+casamos|cortamos|terminamos|rompimos|nos\s+separamos|nos\s+divorciamos|estoy\s+solter[oa])\b",
            r"\b(?:meu|minha)\s+(?:nova\s+|novo\s+)?(?:namorada|namorado|esposa|marido|mulher|parceira|parceiro|noiva|noivo)\s+(?:e|se\s+chama)\b",
            r"\b(?:estou\s+namorando|namoro\s+com|casei|nos\s+casamos|terminamos|nos\s+separamos|estou\s+solteir[oa])\b",
            r"\b(?:ma|mon)\s+(?:nouvelle\s+|nouveau\s+)?(?:copine|copain|femme|mari|compagne|compagnon|partenaire|fiancee|fiance)\s+(?:est|s'appelle)\b",
            r"\b(?:je\s+sors\s+avec|on\s+s'est\s+separes?|nous\s+nous\s+sommes\s+separes|on\s+a\s+rompu|j'ai\s+rompu|je\s+me\s+suis\s+marie|celibataire)\b",
            r"\b(?:meine|mein)\s+(?:neue\s+|neuer\s+)?(?:freundin|freund|frau|mann|partnerin|partner|verlobte|verlobter)\s+(?:ist|heisst)\b",
            r"\b(?:getrennt|schluss\s+gemacht|verheiratet|zusammen\s+mit|verlobt|single)\b",
        ),
        _rx(
            r"\b(?:partner|girlfriend|boyfriend|wife|husband|spouse|fiance|fiancee|married|dating|seeing\s+anyone|relationship|single)\b",
            r"\b(?:novia|novio|pareja|esposa|esposo|marido|mujer|casad[oa]|saliendo|namorada|namorado|parceira|parceiro|casad[oa])\b",
            r"\b(?:copine|copain|femme|mari|compagne|compagnon|partenaire|marie|mariee|freundin|freund|frau|mann|partnerin|verheiratet)\b",
        ),
    ),
    AttributeSpec(
        "pet",
        _rx(
            r"\b(?:have|has|got|adopted|adopt|own|owns|rescued|bought|getting)\s+(?:a|an|two|three|the|my|our|new|\d+)?\s*(?:new\s+|little\s+|\w+\s+)?"
            + PET_WORDS,
            r"\b(?:my|our|her|his)\s+(?:new\s+|old\s+|little\s+)?" + PET_WORDS,
            PET_WORDS + r"\s+(?:is\s+called|named|called|died|passed\s+away|ran\s+away|was\s+put\s+down)",
            r"\b(?:tengo|tenemos|tiene|adopte|adoptamos|tenho|temos|tem|adotei|adotamos|j'ai|nous\s+avons|a\s+un|a\s+une|adopte|habe|haben|hat|adoptiert)\b.*"
            + PET_WORDS,
            r"\b(?:mi|mis|meu|minha|mon|ma|mein|meine|nuestro|nuestra)\s+(?:\w+\s+)?" + PET_WORDS,
            r"\b(?:murio|fallecio|se\s+murio|morreu|faleceu|est\s+mort|est\s+morte|ist\s+gestorben|gestorben)\b",
            r"\bno\s+pets\b|\bno\s+longer\s+have\s+(?:a|any)\s+(?:pet|pets)\b",
        ),
        _rx(
            r"\b(?:pet|pets|dog|dogs|cat|cats|puppy|kitten|animal|animals)\b",
            r"\b(?:mascota|mascotas|perro|perros|gato|gatos|animal|animales|cachorro|cao|caes|animal\s+de\s+estimacao|bicho|chien|chiens|chat|chats|animal|animaux|haustier|haustiere|hund|hunde|katze|katzen)\b",
        ),
    ),
    AttributeSpec(
        "car",
        _rx(
            r"\b(?:drive|drives|driving|drove|have|has|got|bought|buy|buying|own|owns|leased|leasing|sold|sell|selling|crashed|totaled|totalled|wrote\s+off|scrapped|traded\s+in|got\s+rid\s+of)\s+(?:a|an|the|my|our|her|his|new|used|old|\w+)?\s*(?:\w+\s+){0,2}"
            + CAR_WORDS,
            r"\b(?:my|our|her|his)\s+(?:new\s+|old\s+)?(?:\w+\s+)?" + CAR_WORDS + r"\s+(?:is|was|'s|broke|died|got)\b",
            r"\b(?:don't|do\s+not|no\s+longer|doesn't|does\s+not)\s+(?:have|own|drive)\s+(?:a|any)\s+(?:car|vehicle)\b|\bcar-?free\b",
            r"\b(?:tengo|conduzco|manejo|compre|vendi|tiene|conduce|maneja|deshice|deshecho|tenho|dirijo|conduzo|comprei|vendi|tem|dirige|j'ai|je\s+conduis|conduit|achete|vendu|fahre|fahrt|habe|hat|haben|gekauft|verkauft)\b.*"
            + CAR_WORDS,
            r"\b(?:mi|su|meu|minha|ma|mon|mein|meine|meinen)\s+(?:nuevo\s+|novo\s+|nouvelle\s+|neues\s+|neuer\s+)?"
            + CAR_WORDS,
            r"\b(?:sin\s+coche|sin\s+carro|sem\s+carro|sans\s+voiture|kein\s+auto)\b",
        ),
        _rx(
            r"\b(?:car|cars|drive|drives|driving|vehicle|motorbike|motorcycle)\b",
            r"\b(?:coche|carro|auto|vehiculo|conduzco|conduces|conduce|manejo|manejas|maneja|conduzo|dirijo|diriges|dirige|voiture|vehicule|conduis|conduit|wagen|fahrzeug|fahre|fahrst|fahrt)\b",
        ),
    ),
    AttributeSpec(
        "phone",
        _rx(
            r"\b(?:my|her|his)\s+(?:new\s+)?(?:phone|mobile|cell|cellphone|telephone|whatsapp)(?:\s+number)?\b",
            r"\b(?:new|changed\s+my)\s+(?:phone\s+)?number\b|\b(?:call|text|reach)\s+me\s+(?:at|on)\b",
            r"\b(?:mi|su)\s+(?:nuevo\s+)?(?:numero|telefono|movil|celular|whatsapp)\b",
            r"\b(?:meu|seu)\s+(?:novo\s+)?(?:numero|telefone|celular|telemovel|whatsapp)\b",
            r"\b(?:mon|son)\s+(?:nouveau\s+)?(?:numero|telephone|portable|tel)\b",
            r"\b(?:meine|seine|ihre)\s+(?:neue\s+)?(?:nummer|handynummer|telefonnummer|handy)\b",
        ),
        _rx(
            r"\b(?:phone|number|mobile|cell|numero|telefono|movil|celular|telefone|telemovel|telephone|portable|nummer|handynummer|telefonnummer|handy)\b"
        ),
    ),
    AttributeSpec(
        "email",
        _rx(
            r"\b(?:e-?mail|mail)\s+(?:address\s+)?(?:is|'s|changed|now)\b|\bemail\s+me\s+at\b|\bnew\s+e-?mail\b",
            r"\b(?:mi|su)\s+(?:nuevo\s+)?(?:correo|email|e-mail|mail)\b|\b(?:meu|seu)\s+(?:novo\s+)?(?:e-?mail)\b",
            r"\b(?:mon|son)\s+(?:nouvel\s+|nouveau\s+)?(?:e-?mail|mail|courriel|adresse\s+(?:e-?mail|mail))\b|\bmon\s+adresse\s+(?:e-?mail|mail)\b",
            r"\b(?:meine|seine|ihre)\s+(?:neue\s+)?(?:e-?mail|mail)(?:-?adresse)?\b",
        ),
        _rx(r"\b(?:e-?mail|email\s+address|mail\s+address|correo|courriel|adresse\s+mail|e-?mail-?adresse)\b"),
    ),
    AttributeSpec(
        "handle",
        _rx(
            r"\b(?:my|her|his|mi|meu|mon|mein)\s+(?:new\s+)?(?:discord|twitter|instagram|insta|github|gitlab|telegram|tiktok|reddit|mastodon|steam|twitch|bluesky|x)\s*(?:handle|username|user\s*name|name|account|tag|id|is|usuario|utilisateur|nutzername)?\b",
            r"\b(?:my|mi|meu|mon|mein)\s+(?:handle|username|user\s*name|nick|nickname|gamertag|usuario|nome\s+de\s+usuario|pseudo|nutzername)\b",
        ),
        _rx(
            r"\b(?:handle|username|user\s*name|discord|twitter|instagram|insta|github|telegram|tiktok|nick|gamertag|usuario|pseudo|nutzername)\b"
        ),
    ),
    AttributeSpec(
        "diet",
        _rx(
            r"\b(?:i'm|im|am|is|are|became|become|went|gone|turned|going|been|being|soy|sou|e|es|suis|est|bin|ist)\s+(?:\w+\s+){0,2}"
            + DIETS,
            r"\b(?:no\s+longer|not|stopped\s+being|quit\s+being)\s+(?:a\s+)?" + DIETS,
            r"\b(?:eat|eats|eating|ate)\s+(?:meat|fish|chicken|pork|beef)\s+(?:again|now)\b|\b(?:don't|do\s+not|no\s+longer|stopped|never)\s+eat(?:ing)?\s+(?:meat|fish|animal)\b",
            r"\b(?:ya\s+no\s+como|volvi\s+a\s+comer|deje\s+de\s+comer|no\s+como)\s+(?:carne|pescado)\b",
            r"\b(?:nao\s+como|voltei\s+a\s+comer|deixei\s+de\s+comer|ja\s+nao\s+como)\s+(?:carne|peixe)\b",
            r"\b(?:je\s+ne\s+mange\s+plus|je\s+remange|je\s+mange\s+a\s+nouveau|j'ai\s+arrete\s+de\s+manger)\s+(?:de\s+la\s+|du\s+)?(?:viande|poisson)\b",
            r"\b(?:esse|isst)\s+(?:wieder|kein|keinen)\s+(?:fleisch|fisch)\b",
            r"\bmy\s+diet\b|\bmi\s+dieta\b|\bminha\s+dieta\b|\bmon\s+regime\b|\bmeine\s+ernahrung\b",
        ),
        _rx(
            r"\b(?:diet|vegetarian|vegan|eat\s+meat|eat\s+fish|meat|dieta|carne|regime\s+alimentaire|viande|fleisch|ernahrung)\b",
            DIETS,
        ),
    ),
    AttributeSpec(
        "timezone",
        _rx(
            r"\b(?:time\s*zone|timezone)\b",
            r"\b(?:utc|gmt)\s*[+-]\s*\d{1,2}\b|\b(?:on|in)\s+(?:\w+\s+)?(?:time|standard\s+time)\b",
            r"\b(?:zona\s+horaria|huso\s+horario|fuso\s+horario|fuseau\s+horaire|zeitzone)\b",
        ),
        _rx(
            r"\b(?:time\s*zone|timezone|zona\s+horaria|huso\s+horario|fuso\s+horario|fuseau\s+horaire|zeitzone|what\s+time\s+is\s+it\s+(?:for|where))\b"
        ),
    ),
    AttributeSpec(
        "gym",
        _rx(
            r"\b(?:gym|fitness\s+(?:club|studio|centre|center|first)|crossfit\s+box|yoga\s+studio|climbing\s+gym|leisure\s+centre|swimming\s+pool|sports\s+club)\b",
            r"\b(?:membership|member)\s+(?:at|of)\b|\bcancell?ed\s+my\s+membership\b",
            r"\b(?:gimnasio|gimnasio|gym|academia|club\s+deportivo|salle\s+de\s+sport|salle\s+de\s+gym|club\s+de\s+sport|fitnessstudio|fitnesscenter|sportverein|mitgliedschaft)\b",
        ),
        _rx(
            r"\b(?:gym|fitness|membership|work\s+out|workout|train|gimnasio|academia|entreno|salle\s+de\s+sport|fitnessstudio|trainiere|mitgliedschaft)\b"
        ),
    ),
    AttributeSpec(
        "appointment_time",
        _rx(
            r"\bprefer(?:s|red)?\b.*" + TIME_OF_DAY,
            TIME_OF_DAY + r"\s+(?:work|works|are|is|suit|suits)\s+(?:better|best)\b",
            r"\b(?:appointments?|meetings?|slots?|calls?|sessions?|bookings?)\b.*\b(?:in\s+the\s+)?" + TIME_OF_DAY,
            r"\b(?:prefiero|me\s+viene\s+mejor|me\s+va\s+mejor|prefiro|fica\s+melhor|je\s+prefere|m'arrange|ich\s+bevorzuge|lieber|passt\s+mir\s+besser)\b.*"
            + TIME_OF_DAY,
            r"\b(?:citas?|consultas?|reunion(?:es)?|horario|rendez-vous|creneaux?|termine?|besprechung)\b.*"
            + TIME_OF_DAY,
        ),
        _rx(
            r"\b(?:appointments?|meeting\s+time|slot|book|booking|schedule|when\s+(?:do|should|can)\b.*\b(?:meet|see|call))\b",
            r"\b(?:citas?|consulta|horario|reunion|agendar|marcar|rendez-vous|creneau|termin|termine)\b",
        ),
    ),
    AttributeSpec(
        "hobby",
        _rx(
            r"\b(?:my|her|his)\s+(?:new\s+)?(?:hobby|hobbies|pastime|passion)\b",
            r"\b(?:took\s+up|picked\s+up|taken\s+up|got\s+into|getting\s+into|gave\s+up|given\s+up|quit|stopped)\s+(?:\w+ing|pottery|yoga|chess|painting|knitting|climbing|surfing|running|cycling|photography|gardening|baking|the\s+guitar|guitar|piano|tennis|golf|football|soccer|swimming|dancing)\b",
            r"\b(?:in\s+my\s+(?:free|spare)\s+time)\b|\b(?:i'm|im|i\s+am)\s+(?:really\s+)?into\b",
            r"\b(?:mi|su)\s+(?:nuevo\s+)?(?:pasatiempo|hobby|aficion)\b|\b(?:meu|seu)\s+(?:novo\s+)?(?:hobby|passatempo)\b",
            r"\b(?:mon|son)\s+(?:nouveau\s+)?(?:loisir|passe-temps|hobby)\b|\b(?:mein|sein|ihr)\s+(?:neues\s+)?hobby\b",
            r"\ben\s+mi\s+tiempo\s+libre\b|\bno\s+meu\s+tempo\s+livre\b|\bpendant\s+mon\s+temps\s+libre\b|\bin\s+meiner\s+freizeit\b",
        ),
        _rx(
            r"\b(?:hobby|hobbies|free\s+time|spare\s+time|pastime|for\s+fun|pasatiempo|aficion|tiempo\s+libre|passatempo|tempo\s+livre|loisir|loisirs|passe-temps|temps\s+libre|freizeit)\b"
        ),
    ),
    AttributeSpec(
        "language_learning",
        _rx(
            r"\b(?:learning|studying|learn|practising|practicing|taking|gave\s+up|quit|stopped)\s+(?:\w+\s+)?"
            + LANGUAGES,
            r"\b(?:aprendo|estoy\s+aprendiendo|aprendiendo|estudio|estou\s+aprendendo|aprendo|estudo|j'apprends|apprends|j'etudie|ich\s+lerne|lerne|lernt)\s+(?:\w+\s+)?"
            + LANGUAGES,
            r"\b(?:classes|lessons|course|clases|curso|aulas|cours|kurs|unterricht)\s+(?:of|de|d'|in)?\s*" + LANGUAGES,
        ),
        _rx(
            r"\b(?:language|languages|learning|idioma|idiomas|lengua|aprendiendo|aprendendo|lingua|langue|apprends|sprache|sprachen|lerne|lernst)\b"
        ),
    ),
    AttributeSpec(
        "tax_regime",
        _rx(
            r"\b(?:tax\s+(?:regime|status|scheme|bracket|class|residency|resident)|vat\s+(?:scheme|registered|regime)|"
            r"registered\s+for\s+vat|sole\s+trader|self\s+assessment)\b",
            r"\b(?:regimen|regime)\s+(?:tributario|fiscal|de\s+tributacao|general|simplificado|propyme|pro\s+pyme)\b|"
            r"\b(?:propyme|pro\s+pyme|14\s*a|14\s*d|renta\s+presunta|simples\s+nacional|mei|lucro\s+presumido|"
            r"auto-?entrepreneur|micro-?entreprise|kleinunternehmer|steuerklasse)\b",
        ),
        _rx(
            r"\b(?:tax|taxes|vat|fiscal|impuestos?|tributari[ao]|tributos?|hacienda|sii|iva|impostos?|tributacao|"
            r"receita|impots?|tva|steuer|steuern|steuerklasse|finanzamt)\b"
        ),
    ),
    AttributeSpec(
        "name",
        _rx(
            r"\b(?:my\s+name\s+is|my\s+name's|call\s+me|i'm\s+called|i\s+go\s+by)\b",
            r"\b(?:me\s+llamo|mi\s+nombre\s+es|me\s+chamo|meu\s+nome\s+e|je\s+m'appelle|mon\s+nom\s+est|ich\s+heisse|mein\s+name\s+ist)\b",
        ),
        _rx(
            r"\b(?:my\s+name|what\s+am\s+i\s+called|como\s+me\s+llamo|mi\s+nombre|meu\s+nome|como\s+me\s+chamo|mon\s+nom|comment\s+je\s+m'appelle|wie\s+heisse\s+ich|mein\s+name)\b"
        ),
    ),
    AttributeSpec(
        "age",
        _rx(
            r"\b(?:i'm|im|i\s+am|she's|he's|turned|turning|just\s+turned)\s+\d{1,3}(?:\s+years?\s+old|\s+now|\s+today)?\b(?!\s*[\d-])",
            r"\bis\s+\d{1,3}\s+years?\s+old\b",
            r"\b(?:tengo|tiene|cumpli|cumple|tenho|tem|fiz|fez|j'ai|a|ich\s+bin|ist|wurde|werde)\s+\d{1,3}\s+(?:anos|ans|jahre)\b",
        ),
        _rx(
            r"\b(?:how\s+old|my\s+age|what\s+age|cuantos\s+anos|que\s+edad|quantos\s+anos|que\s+idade|quel\s+age|wie\s+alt)\b"
        ),
    ),
)
# Nouns that name an attribute, for the change cues every language shares: "new job!",
# "tengo jefe nuevo", "troquei de número", "I switched gyms", "plus de voiture", "kein Auto mehr".
ATTRIBUTE_NOUNS = {
    "residence": "flat|apartment|house|home|place|address|city|town|piso|casa|departamento|apartamento|ciudad|"
    "direccion|cidade|endereco|appartement|appart|maison|ville|adresse|wohnung|haus|stadt|adresse",
    "work": "job|jobs|work|employer|company|position|role|career|gig|profession|trabajo|empleo|curro|chamba|"
    "empresa|puesto|profesion|emprego|trabalho|cargo|profissao|boulot|travail|emploi|poste|metier|entreprise|"
    "job|arbeit|stelle|firma|beruf|arbeitgeber",
    "study": "school|schools|university|universities|uni|unis|college|course|degree|masters|escuela|colegio|"
    "universidad|facultad|instituto|carrera|master|escola|faculdade|universidade|curso|mestrado|ecole|fac|"
    "universite|lycee|schule|universitat|studium|studiengang",
    "manager": "boss|manager|supervisor|team lead|jefe|jefa|gerente|supervisora|chefe|patron|patronne|chef|"
    "cheffe|responsable|chefin|vorgesetzter|vorgesetzte",
    "partner": "girlfriend|boyfriend|partner|wife|husband|novia|novio|pareja|esposa|esposo|marido|namorada|"
    "namorado|parceira|parceiro|copine|copain|compagne|compagnon|freundin|freund|partnerin",
    "pet": "pet|pets|dog|cat|puppy|kitten|mascota|perro|gato|bichinho|animal|cachorro|gato|chien|chat|"
    "haustier|hund|katze",
    "car": "car|cars|coche|carro|auto|voiture|wagen",
    "phone": "number|phone|mobile|cell|numero|telefono|movil|celular|telefone|telemovel|portable|nummer|"
    "handynummer|handy",
    "email": "email|e-mail|mail|correo|courriel|mailadresse",
    "gym": "gym|gyms|gimnasio|academia|salle de sport|fitnessstudio",
    "diet": "diet|dieta|regime|ernahrung",
    "hobby": "hobby|hobbies|pastime|pasatiempo|aficion|passatempo|loisir|passe-temps",
    "language_learning": "language|languages|idioma|lengua|lingua|langue|sprache",
    "timezone": "time zone|timezone|zona horaria|fuso horario|fuseau horaire|zeitzone",
}
_NEW = (
    r"(?:new|another|nuevo|nueva|otro|otra|novo|nova|outro|outra|nouveau|nouvel|nouvelle|autre|neue|neuer|neues|neuen)"
)
_CHANGED = (
    r"(?:switched|changed|swapped|moved|cambie\s+de|cambiado\s+de|cambio\s+de|he\s+cambiado\s+de|mudei\s+de|"
    r"troquei\s+de|trocou\s+de|mudou\s+de|change\s+de|a\s+change\s+de|ai\s+change\s+de|gewechselt|wechselt|"
    r"gewechselt\s+die|die\s+\w+\s+gewechselt)"
)
_NO_MORE = (
    r"(?:no\s+more|no\s+longer\s+(?:have|has|got)\s+(?:a|an|any)|don't\s+have\s+(?:a|an|any)|ya\s+no\s+tengo|"
    r"sin|nao\s+tenho\s+mais|ja\s+nao\s+tenho|sem|plus\s+de|n'ai\s+plus\s+de|kein|keine|keinen)"
)


def _noun_cues(nouns: str) -> re.Pattern:
    n = _words(nouns)
    return _rx(
        rf"{_NEW}\s+(?:\w+\s+)?{n}",
        rf"{n}\s+{_NEW}\b",
        rf"{_CHANGED}\s+(?:(?:my|the|her|his|mi|de|meu|minha|mon|ma|de\s+la|du|den|die|das)\s+)?{n}",
        rf"{_NO_MORE}\s+(?:\w+\s+)?{n}",
        rf"\b{n}\s+(?:anymore|any\s+more|mehr)\b",
    )


_NOUN_CUES = {attr: _noun_cues(nouns) for attr, nouns in ATTRIBUTE_NOUNS.items()}

_FAVOURITE_STMT = _rx(
    r"\b(?:my|her|his|our)\s+(?:all[- ]time\s+|new\s+|absolute\s+)?(?:favourite|favorite|fave|fav)\s+(?P<t1>[a-z]+(?:\s+[a-z]+)?)\b",
    r"\b(?:is|are|'s)\s+(?:now\s+)?(?:my|her|his)\s+(?:new\s+)?(?:favourite|favorite|fave)\s+(?P<t2>[a-z]+(?:\s+[a-z]+)?)\b",
    r"\b(?:mi|su|mis)\s+(?P<t3>[a-z]+(?:\s+[a-z]+)?)\s+(?:favorit[ao]s?|preferid[ao]s?)\b",
    r"\b(?:meu|minha|seu|sua)\s+(?P<t4>[a-z]+(?:\s+[a-z]+)?)\s+(?:favorit[ao]|preferid[ao])\b",
    r"\b(?:mon|ma|mes|son|sa)\s+(?P<t5>[a-z]+(?:\s+[a-z]+)?)\s+(?:prefere|preferee|preferes|preferees|favori|favorite)\b",
    r"\b(?:mein|meine|meinen|sein|seine|ihr|ihre)\s+(?:neues\s+|neuer\s+|neue\s+)?lieblings(?P<t6>[a-z]+)\b",
)
_FAVOURITE_Q = _rx(
    r"\b(?:favourite|favorite|fave|fav|favorit[ao]s?|preferid[ao]|prefere|preferee|lieblings)(?P<t>[a-z]*)\b",
)
_GERMAN_FAV = {
    "essen": "food",
    "gericht": "food",
    "farbe": "colour",
    "band": "band",
    "lied": "song",
    "film": "movie",
    "buch": "book",
    "sport": "sport",
    "verein": "team",
    "mannschaft": "team",
    "getrank": "drink",
    "serie": "show",
    "spiel": "game",
    "jahreszeit": "season",
    "stadt": "place",
    "ort": "place",
    "restaurant": "restaurant",
    "tier": "animal",
    "blume": "flower",
    "autor": "author",
}

_QUESTION_OPEN = re.compile(
    r"^\s*(?:¿|what|what's|whats|where|where's|who|who's|whom|whose|which|when|why|how|do|does|did|is|are|am|was|"
    r"were|have|has|had|can|could|should|would|will|tell\s+me|remind\s+me|any\s+idea|que|qual|quais|cual|cuales|"
    r"donde|onde|quien|quem|cuando|quando|como|cuanto|cuantos|quanto|quantos|por\s+que|porque|ou|quel|quelle|"
    r"quels|quelles|qui|quand|comment|pourquoi|est-ce|combien|wo|was|wer|wann|wie|welche|welcher|welches|warum|"
    r"weshalb|hast|bist|sind|habe\s+ich|bin\s+ich)\b"
)
_HISTORY = re.compile(
    r"\b(?:before|previous|previously|used\s+to|old|former|formerly|earlier|originally|prior|past|ex|back\s+then|"
    r"until|used|first|last\s+(?:job|car|place|house|flat|school)|antes|anterior|anteriormente|solia|solias|antiguo|"
    r"antigua|viejo|vieja|primer|primera|antigamente|costumava|costumavas|antigo|avant|ancien|ancienne|auparavant|"
    r"precedent|precedente|autrefois|vorher|fruher|fruhere|fruheren|fruherer|ehemalig|ehemalige|ehemaligen|davor|"
    r"alte|alten|alter|altes)\b"
)
_FIRST = re.compile(
    r"\b(?:i|i'm|im|i've|ive|i'd|i'll|me|my|mine|myself|we|we're|we've|our|us|yo|mi|mis|me|nosotros|nuestro|nuestra|"
    r"eu|meu|minha|meus|minhas|nos|nosso|nossa|je|j|moi|mon|ma|mes|nous|notre|ich|mein|meine|meinen|meinem|mir|"
    r"mich|wir|unser|unsere)\b"
)
# "he" opens Spanish first-person perfects too ("he cambiado de trabajo"): not a pronoun there.
_THIRD_PRONOUN = re.compile(
    r"^\s*(?:he(?!\s+(?:\w+(?:ado|ido|to|cho)|sido|tenido)\b)|she|they|el|ella|ellos|ele|ela|eles|il|elle|ils|er|sie)\b"
)
_KIN_SUBJ = re.compile(
    rf"^\s*(?:so\s+|well\s+|oh\s+|and\s+|but\s+|also\s+|y\s+|e\s+|et\s+|und\s+)?{_POSS}\s+(?:new\s+|little\s+|older\s+|younger\s+|big\s+|old\s+)?(?P<kin>{KIN_SUBJECT[2:-2]})\b(?P<after>.*)$"
)
_NAME_START = re.compile(r"^\s*(?P<name>[A-ZÀ-Ý][\w'\-]+(?:\s+[A-ZÀ-Ý][\w'\-]+)?)\s+(?P<rest>.+)$")
_NOT_NAMES = frozenset(
    fold(w)
    for w in "I I'm I've I'd My Our We The A An And But So Also Well Oh Yes No Yeah Hey Hi Hello Today Tomorrow "
    "Yesterday Now Then This That These Those It It's There Here He She They You Your Mi Yo Tengo Me Nos Mis "
    "Ya Hoy Ahora Mañana Ayer Eu Meu Minha Hoje Agora Je J'ai Mon Ma Mes Nous Aujourd'hui Maintenant Ich Mein "
    "Meine Wir Heute Jetzt Morgen Gestern El La Los Las Le Les Der Die Das Um Uma Un Une Ein Eine After Before "
    "Since When While If Because Actually Finally Just Still Anyway Btw Lol Ok Okay Sorry Thanks Please".split()
)
_CLAUSE = re.compile(r"[.!?;\n]+|,\s*(?:but|and|so|though|although|pero|y|mas|mais|et|aber|und)\s+", re.IGNORECASE)
_KIN_NAME = re.compile(r"^\s*(?:,\s*)?(?P<name>[A-ZÀ-Ý][\w'\-]+)\b")


@dataclass(frozen=True, slots=True)
class Statement:
    """A sentence stating (or ending) a subject's attribute. `subject` is None for the speaker,
    else the named person or "kin:<word>" for an unnamed relative/colleague ("my sister")."""

    attribute: str
    subject: str | None
    sentence: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class QuestionKeys:
    """What a question asks about: attributes, whose (None = the asker; a name or "kin:<word>"),
    and whether it asks about the past ("before", "antes", "vorher")."""

    attributes: tuple[str, ...]
    subject: str | None
    history: bool


def is_question(sentence: str) -> bool:
    s = sentence.strip()
    return s.endswith("?") or s.startswith("¿") or bool(_QUESTION_OPEN.match(fold(s)) and len(s.split()) <= 14)


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences/clauses of `text`."""
    out, pos = [], 0
    for m in _CLAUSE.finditer(text):
        if m.start() > pos:
            out.append((pos, m.start() + (1 if text[m.start()] == "?" else 0)))
        pos = m.end()
    if pos < len(text):
        out.append((pos, len(text)))
    return [(s, e) for s, e in out if text[s:e].strip()]


def favourite_thing(word: str) -> str:
    w = fold(word).strip()
    if w in _THING_OF:
        return _THING_OF[w]
    first = w.split()[0] if w else w
    if first in _THING_OF:
        return _THING_OF[first]
    if first in _GERMAN_FAV:
        return _GERMAN_FAV[first]
    return re.sub(r"[^a-z0-9]+", "_", w)[:30].strip("_") or "thing"


# A capitalised first word is a person only when a third-person verb follows it ("Anna moved…",
# "Ana vive…"); "Vivo en…", "Moro em…", "Dejé…" are first-person verbs that open a sentence.
_THIRD_VERB = re.compile(
    r"^(?:(?:now|just|finally|recently|also|still|ahora|ya|agora|maintenant|jetzt)\s+)?(?:is|was|has|had|lives|lived|"
    r"moved|works|worked|started|starts|got|gets|goes|went|joined|quit|left|studies|studied|drives|bought|sold|"
    r"teaches|became|broke|adopted|prefers|loves|likes|hates|eats|turned|married|divorced|vive|vivia|trabaja|"
    r"trabajaba|estudia|se|es|tiene|empezo|dejo|mora|morava|trabalha|estuda|e|tem|comecou|mudou|habite|vit|"
    r"travaille|etudie|est|a|s'est|wohnt|lebt|arbeitet|studiert|ist|hat|zog|fahrt|isst|will|'s|does)\b"
)


_DESCRIBES_MINE = re.compile(
    r"^(?:is|'s|es|e|est|ist)\s+(?:now\s+|ahora\s+|agora\s+|maintenant\s+|jetzt\s+)?(?:my|mi|meu|minha|mon|ma|mein|meine)\b"
)
# "Maya and I broke up": a statement about the speaker (and someone).
_AND_I = re.compile(r"^(?:and|y|e|et|und)\s+(?:i|me|yo|eu|moi|ich)\b")
# Attributes often stated as a bare "label: value" line, about the speaker (or their company).
_DECLARATIVE = frozenset({"tax_regime", "email", "phone", "handle", "timezone"})


def _subject(sentence: str, names: frozenset[str] | None = None) -> tuple[str | None, str]:
    """(subject, predicate text folded): None = the speaker. A sentence opening with a named
    person or "my <relative> (Name)" is about them."""
    m = _KIN_SUBJ.match(fold(sentence))
    if m:
        after_raw = sentence[len(sentence) - len(m.group("after")) :] if m.group("after") else ""
        named = _KIN_NAME.match(after_raw)
        rest = fold(after_raw[named.end() :] if named else after_raw)
        # "my boss is Tom" / "my wife is called Ana": the speaker's attribute, not the kin's.
        if re.match(r"^\s*(?:is|'s|es|e|est|ist|se\s+llama|se\s+chama|s'appelle|heisst)\b", rest) and not named:
            return None, fold(sentence)
        return (named.group("name") if named else f"kin:{m.group('kin')}"), rest
    if names:  # a known person, however it is typed: "rubén dejó…", "josh cancelled…"
        folded = fold(sentence.strip())
        for n in sorted(names, key=len, reverse=True):
            if folded.startswith(n) and folded[len(n) : len(n) + 1] in (" ", ","):
                rest = folded[len(n) :].lstrip(" ,")
                if _DESCRIBES_MINE.match(rest) or _AND_I.match(rest):
                    return None, rest
                return sentence.strip()[: len(n)], rest
    m = _NAME_START.match(sentence)
    if m and fold(m.group("name").split()[0]) not in _NOT_NAMES:
        rest = fold(m.group("rest"))
        if _DESCRIBES_MINE.match(rest) or _AND_I.match(rest):
            return None, rest  # "Tom is my new manager": the speaker's manager
        known = names is not None and fold(m.group("name")) in names
        if known or (_THIRD_VERB.match(rest) and not _FIRST_VERB.match(fold(m.group("name")))):
            return m.group("name"), rest
    return None, fold(sentence)


def _favourite(text: str) -> str | None:
    m = _FAVOURITE_STMT.search(text)
    if not m:
        return None
    word = next(g for g in m.groups() if g)
    return f"favourite_{favourite_thing(word)}"


def statements(text: str, names: Iterable[str] = ()) -> list[Statement]:
    """The attribute statements in one user turn (questions and greetings give none): at most
    one per (subject, attribute), the last one said winning ("I lived in Lisbon, now I live in
    Porto"). `names`: people known to be mentioned (NER, the scope's entities) — a sentence opening
    with one is about them even without a recognisable verb after the name."""
    known = frozenset(fold(n) for n in names) or None
    found: dict[tuple[str | None, str], Statement] = {}
    last_subject: str | None = None
    for s, e in sentences(text):
        sent = text[s:e].strip()
        if not sent or is_question(sent):
            continue
        subject, pred = _subject(sent, known)
        if subject is None and _THIRD_PRONOUN.match(fold(sent)) and last_subject is not None:
            subject = last_subject  # "Anna moved to Berlin. She works at Siemens now."
        elif subject is None and _THIRD_PRONOUN.match(fold(sent)):
            continue  # about someone we can't name
        speaker_said = subject is not None or _FIRST.search(pred) or _first_person_verb(pred)
        last_subject = subject
        attrs = []
        fav = _favourite(pred)
        if fav:
            attrs.append(fav)
        for spec in SPECS:
            if (speaker_said or spec.name in _DECLARATIVE) and spec.statement.search(pred):
                attrs.append(spec.name)
        if not attrs:  # a change said with the attribute's noun alone
            attrs += [a for a, rx in _NOUN_CUES.items() if rx.search(pred)]
        for attr in _prune(attrs, pred):
            found[(subject, attr)] = Statement(attr, subject, sent, s, e)
    return list(found.values())


_FIRST_VERB = re.compile(
    r"\b(?:vivo|trabajo|estudio|soy|tengo|me\s+\w+|prefiero|deje|renuncie|vendi|compre|conduzco|manejo|aprendo|"
    r"moro|trabalho|estudo|sou|tenho|mudei|prefiro|deixei|vendi|comprei|dirijo|aprendo|"
    r"habite|travaille|etudie|suis|j'\w+|prefere|apprends|conduis|"
    r"wohne|lebe|arbeite|studiere|bin|habe|fahre|lerne|esse|bevorzuge)\b"
)


def _first_person_verb(pred: str) -> bool:
    return bool(_FIRST_VERB.search(pred))


def _prune(attrs: list[str], pred: str) -> list[str]:
    """Resolve overlapping cues: a favourite statement is only that; "moved to a new school" is
    study, not residence; "my boss" sentences about work are about the manager."""
    out = list(dict.fromkeys(attrs))
    if any(a.startswith("favourite_") for a in out):
        return [a for a in out if a.startswith("favourite_")]
    school = re.search(
        r"\b(?:school|college|university|uni|kindergarten|nursery|elementary|primary|preschool|academy|escuela|"
        r"colegio|universidad|escola|faculdade|ecole|lycee|universite|schule|kita)\b",
        pred,
    )
    if "study" in out and school:
        out = [a for a in out if a not in ("residence", "work")]
    if "manager" in out and "work" in out:
        out.remove("work")
    if "language_learning" in out and "study" in out:
        out.remove("study")
    if "pet" in out and len(out) > 1:
        out = ["pet"]
    if "gym" in out and "work" in out and not re.search(OCCUPATIONS, pred):
        out.remove("work")
    return out


def asks_about_past(text: str) -> bool:
    """Whether a question asks about an earlier state ("where did I live before?", "old job")."""
    return bool(_HISTORY.search(fold(text)))


def question_keys(text: str, names: Iterable[str] = ()) -> QuestionKeys | None:
    """The attributes a question asks about (None if it names none). `names`: people known in
    the asker's scopes — "who does tom report to" is about Tom however it is typed."""
    folded = fold(text)
    attrs = []
    m = _FAVOURITE_Q.search(folded)
    if m:
        thing = m.group("t") or ""
        if not thing:
            after = re.findall(r"[a-z]+", folded[m.end() :])
            before = re.findall(r"[a-z]+", folded[: m.start()])
            cand = [w for w in after[:2] + before[-2:][::-1] if w in _THING_OF or w in _GERMAN_FAV]
            thing = cand[0] if cand else ""
        attrs.append(f"favourite_{favourite_thing(thing)}" if thing else "favourite_thing")
    for spec in SPECS:
        if spec.question.search(folded):
            attrs.append(spec.name)
    if not attrs:
        return None
    if any(a.startswith("favourite_") for a in attrs):
        attrs = [a for a in attrs if a.startswith("favourite_")]
    subject = _question_subject(text, names)
    if (
        subject
        and subject.startswith("kin:")
        and _ROLE_KIN.search(subject[4:])
        and ("manager" in attrs or "partner" in attrs)
    ):
        subject = None  # "who is my boss?" asks the asker's manager attribute
    return QuestionKeys(tuple(dict.fromkeys(attrs)), subject, bool(_HISTORY.search(folded)))


_ROLE_KIN = re.compile(
    r"^(?:boss|manager|wife|husband|partner|girlfriend|boyfriend|jefe|jefa|esposa|esposo|marido|mujer|novia|novio|"
    r"pareja|chefe|namorada|namorado|patron|patronne|femme|mari|copine|copain|chef|chefin|freundin|freund|frau|mann)$"
)
_Q_KIN = re.compile(rf"{_POSS}\s+(?P<kin>{KIN_SUBJECT[2:-2]})\b(?:\s*(?P<name>[A-ZÀ-Ý][\w'\-]+))?")
_Q_NAME = re.compile(
    r"\b(?:does|did|is|was|has|had)\s+(?P<n1>[A-ZÀ-Ý][\w'\-]+)\b|\b(?P<n2>[A-ZÀ-Ý][\w'\-]+)'s\b|\b(?:de|da|do)\s+(?P<n3>[A-ZÀ-Ý][\w'\-]+)\b|\b(?P<n4>[A-ZÀ-Ý][\w'\-]+)\s+(?:live|work|study|vive|trabaja|mora|trabalha|habite|travaille|wohnt|arbeitet)\b"
)


def _question_subject(text: str, names: Iterable[str] = ()) -> str | None:
    folded = fold(text)
    if not _Q_KIN.search(folded):
        for n in sorted({fold(x) for x in names if x}, key=len, reverse=True):
            if re.search(rf"\b{re.escape(n)}\b", folded):
                return n
    m = _Q_KIN.search(folded)
    if m:
        raw = _Q_KIN.search(text)
        name = raw.group("name") if raw else None
        return name or f"kin:{m.group('kin')}"
    for m in _Q_NAME.finditer(text):
        name = re.sub(r"'s?$", "", next(g for g in m.groups() if g))  # "is Leo's boss" asks about Leo
        if fold(name) not in _NOT_NAMES and fold(name) not in {"where", "what", "who", "how"}:
            return name
    return None


_SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def _same_subject(said: str | None, asked: str | None) -> bool:
    if asked is None or said is None:
        return asked is None and said is None
    a, s = fold(asked).removeprefix("kin:"), fold(said).removeprefix("kin:")
    return a == s or a.split()[0] == s.split()[0]


def speaks_about(text: str, attribute: str, subject: str | None = None, names: Iterable[str] = ()) -> bool:
    """Whether `text` (what someone said, without a "speaker:" prefix) is a statement about
    `attribute` of `subject` (None: the speaker; a name or "kin:<word>": that person): a statement
    the rules key to that attribute, or a sentence using the attribute's vocabulary ("job",
    "trabajo", "Schule") that is about that subject. Questions are not statements. For ranking
    the answers to a question about one current state; microseconds per text."""
    folded_names = [*names, *([subject.removeprefix("kin:")] if subject else [])]
    for st in statements(text, folded_names):
        if _same_attr(st.attribute, attribute) and _same_subject(st.subject, subject):
            return True
    spec = _SPEC_BY_NAME.get(attribute)
    for s, e in sentences(text):
        sent = text[s:e].strip()
        if not sent or is_question(sent):
            continue
        folded = fold(sent)
        cue = (
            bool(_FAVOURITE_Q.search(folded))
            if attribute.startswith("favourite_")
            else bool(spec and spec.question.search(folded))
        )
        if not cue:
            continue
        if subject is None:
            said, _ = _subject(sent, frozenset(fold(n) for n in names) or None)
            if said is None and not _THIRD_PRONOUN.match(folded):
                return True
        elif re.search(rf"\b{re.escape(fold(subject.removeprefix('kin:')))}\b", folded):
            return True
    return False


def _same_attr(said: str, asked: str) -> bool:
    if said == asked:
        return True
    # "what do I like best?" is keyed favourite_thing: any favourite answers it.
    return asked == "favourite_thing" and said.startswith("favourite_")


# A state said to have ended, in any of the five languages ("I don't do chess anymore", "gave up
# on Spanish", "ya no estoy en Energías del Sur", "já não", "je ne fais plus", "nicht mehr").
_ENDED = _rx(
    r"\b(?:anymore|any\s+more|no\s+longer|not\s+any\s+longer|gave\s+up|given\s+up|give\s+up|giving\s+up|"
    r"stopped|quit|quitting|dropped|ditched|done\s+with|over\s+with|finished\s+with|got\s+rid\s+of)\b",
    r"\b(?:ya\s+no|ya\s+nunca|deje\s+de|dejado\s+de|he\s+dejado|deje|se\s+acabo|termine\s+con|ja\s+nao|nao\s+\w+\s+mais|"
    r"deixei\s+de|deixei|parei\s+de|parei\s+com|larguei|desisti\s+d[aoe])\b",
    r"\bn(?:e|')\s*\w+\s+(?:plus|jamais)\b|\b(?:arrete|abandonne|laisse\s+tomber|fini\s+avec)\b",
    r"\b(?:nicht\s+mehr|nie\s+mehr|kein\w*\s+(?:\w+\s+)?mehr|aufgehort|aufgegeben|schluss\s+mit)\b",
)
_VALUE_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]{2,}")
# Words that say nothing about which state ended.
_FUNCTION_WORDS = frozenset(
    "the and but for with that this have has had was were are not now any anymore more longer gave give given "
    "giving stopped quit done over too very really just still also then than them they their there here what "
    "when where which who why how about after before since from into onto last week month year years days "
    "busy time lately these those some much many thing things stuff kind sort bit lot lots haha lol yeah "
    "los las del una uno unos unas que por para con sin pero como esta este esto estos estas estoy esta "
    "mas muy ahora hace desde todo toda todos todas nada algo dejado deje dejar nunca tambien porque "
    "uma umas uns dos das nao mais agora com sem pelo pela esse essa isso muito parei deixei desde ainda "
    "les des une est pas plus que qui avec sans pour dans sur mais tout tous toute fait faire arrete fini "
    "der die das den dem des ein eine einen nicht mehr kein keine keinen mit ohne und aber auch noch schon "
    "jetzt seit habe hast hat ich bin ist sind".split()
)


def ended_values(sentence: str) -> set[str] | None:
    """The content words of a sentence that says a state ended ("I don't do chess anymore" →
    {"chess"}), folded; None when it says nothing ended or is a question. Matched against the
    words of the facts holding a key, they say which key the sentence ends."""
    if is_question(sentence):
        return None
    folded = fold(sentence)
    if not _ENDED.search(folded):
        return None
    return {w.strip("'-") for w in _VALUE_WORD.findall(folded) if w.strip("'-") not in _FUNCTION_WORDS} or None
