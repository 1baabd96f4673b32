"""Parameters of the synthetic world: the ``SynthParams`` knobs and the constant tables
(time units, categories and their economics, segments, regions, tiers, seasonality,
source systems and their codes, names, email domains, phone and card templates, uplift kinds)."""

from __future__ import annotations

from dataclasses import dataclass

#: ids embed the chunk-local record number in 24 bits
MAX_CHUNK_SIZE = 2_000_000

US_PER_DAY = 86_400_000_000
MINUTE = 1.0 / 1440.0

# ---------------------------------------------------------------------------- world
CATEGORIES = ("grocery", "fresh", "dairy", "bakery", "beverages", "alcohol",
              "household", "beauty", "baby", "pets", "electronics", "clothing")
#: median list price (GBP), log-sd, extra units per line (Poisson mean), share sold by weight
_CATEGORY_ECONOMICS = {
    "grocery": (2.2, 0.6, 0.5, 0.0), "fresh": (3.0, 0.6, 0.3, 0.35), "dairy": (1.8, 0.5, 0.6, 0.0),
    "bakery": (1.6, 0.5, 0.4, 0.0), "beverages": (2.0, 0.7, 0.6, 0.0), "alcohol": (9.0, 0.6, 0.3, 0.0),
    "household": (4.0, 0.6, 0.3, 0.0), "beauty": (7.0, 0.7, 0.1, 0.0), "baby": (8.0, 0.6, 0.4, 0.0),
    "pets": (9.0, 0.7, 0.3, 0.0), "electronics": (45.0, 1.0, 0.02, 0.0), "clothing": (18.0, 0.7, 0.15, 0.0),
}
_SUBCATEGORIES = {
    "grocery": ("pasta", "rice", "tinned", "cereal", "sauces", "snacks"),
    "fresh": ("fruit", "vegetables", "meat", "fish"),
    "dairy": ("milk", "cheese", "yogurt", "butter"),
    "bakery": ("bread", "cakes", "pastries"),
    "beverages": ("water", "soft drinks", "juice", "coffee", "tea"),
    "alcohol": ("wine", "beer", "spirits"),
    "household": ("cleaning", "laundry", "paper", "kitchen"),
    "beauty": ("skincare", "haircare", "makeup", "fragrance"),
    "baby": ("nappies", "baby food", "baby care"),
    "pets": ("dog food", "cat food", "pet care"),
    "electronics": ("phones", "audio", "computing", "small appliances"),
    "clothing": ("womenswear", "menswear", "kidswear", "shoes"),
}
#: share of lines of an average shopper, before segment boosts
_BASE_CATEGORY_SHARE = (0.22, 0.14, 0.12, 0.08, 0.10, 0.05, 0.10, 0.05, 0.01, 0.02, 0.02, 0.05)
#: segment -> (share of persons, category boosts)
SEGMENTS: dict[str, tuple[float, dict[str, float]]] = {
    "general": (0.30, {}),
    "families": (0.18, {"baby": 15.0, "household": 2.0, "grocery": 1.5}),
    "pet_owners": (0.12, {"pets": 10.0}),
    "foodies": (0.14, {"fresh": 2.0, "alcohol": 3.0, "bakery": 2.0}),
    "tech": (0.08, {"electronics": 8.0}),
    "fashion": (0.08, {"clothing": 4.0, "beauty": 3.0}),
    "budget": (0.10, {"grocery": 1.6, "electronics": 0.3, "clothing": 0.5, "alcohol": 0.5}),
}
REGIONS = ("London", "South East", "South West", "East of England", "West Midlands", "East Midlands",
           "Yorkshire and the Humber", "North West", "North East", "Wales", "Scotland", "Northern Ireland")
_REGION_SHARE = (0.14, 0.14, 0.09, 0.10, 0.09, 0.07, 0.08, 0.11, 0.04, 0.05, 0.06, 0.03)
N_STORES = 150
TIERS = ("bronze", "silver", "gold", "platinum")
#: purchase rate (orders/day) above which a person holds the next tier
_TIER_RATE = (1 / 60, 1 / 30, 1 / 12)
GENDERS = ("F", "M", "X")

_MONTH_FACTOR = (0.92, 0.88, 0.95, 1.0, 1.0, 0.95, 0.85, 0.80, 0.95, 1.0, 1.2, 1.55)
_WEEKDAY_FACTOR = (0.90, 0.88, 0.92, 0.97, 1.08, 1.28, 1.00)  # Monday .. Sunday
#: store orders are pulled to weekends more than online ones
_WEEKEND_STORE_BOOST = 1.5
_STORE_HOURS = (0, 0, 0, 0, 0, 0, 0, 1, 3, 5, 7, 9, 10, 8, 7, 7, 8, 10, 10, 7, 4, 2, 0, 0)
_ONLINE_HOURS = (2, 1, 1, 0.5, 0.5, 0.5, 1, 2, 3, 4, 4, 4, 5, 5, 4, 4, 4, 5, 6, 8, 9, 9, 7, 4)

# ------------------------------------------------------------------------ systems
SYSTEMS = ("pos", "web", "app", "crm")
POS, WEB, APP, CRM = range(4)
CHANNELS = ("store", "web", "app")
STORE, ONLINE_WEB, ONLINE_APP = range(3)
#: record slots a person may hold, and the system of each
SLOTS = ("pos1", "pos2", "web", "app", "crm1", "crm2")
_SLOT_SYSTEM = (POS, POS, WEB, APP, CRM, CRM)
EVENT_TYPES = ("view", "add_to_cart", "purchase", "email_open", "email_click", "support_ticket")
VIEW, CART, PURCHASE, OPEN, CLICK, TICKET = range(6)
CONTACT_CHANNELS = ("email", "sms", "mail")
#: how a person's purchases in a category react to an offer for it (``truth/response/``)
UPLIFT_KINDS = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
PERSUADABLE, SURE_THING, LOST_CAUSE, SLEEPING_DOG = range(4)
ID_TYPES = ("loyalty_card", "email", "phone", "crm_id", "cookie", "device")
CARD, EMAIL, PHONE, CRM_ID, COOKIE, DEVICE = range(6)

_FIRST_NAMES = (
    "oliver", "george", "harry", "jack", "jacob", "noah", "charlie", "muhammad", "thomas", "oscar",
    "william", "james", "leo", "alfie", "henry", "joshua", "freddie", "archie", "ethan", "isaac",
    "alexander", "joseph", "edward", "samuel", "max", "daniel", "arthur", "lucas", "mohammed", "logan",
    "olivia", "amelia", "isla", "ava", "emily", "sophia", "grace", "mia", "poppy", "ella", "lily",
    "evie", "isabella", "sophie", "ivy", "freya", "harper", "willow", "charlotte", "jessica", "rosie",
    "daisy", "alice", "florence", "elsie", "matilda", "evelyn", "phoebe", "sienna", "ruby", "chloe",
    "priya", "aisha", "fatima", "zara", "sarah", "emma", "laura", "rachel", "hannah", "david", "paul",
    "mark", "andrew", "richard", "peter", "stephen", "michael", "john", "robert", "susan", "karen",
    "helen", "claire", "nicola", "gareth", "rhys", "dylan", "owen", "ewan", "callum", "rory", "niamh",
    "aoife", "ciara", "siobhan", "seamus", "kwame", "chen", "wei", "raj", "anil", "deepa", "olu",
)
_LAST_NAMES = (
    "smith", "jones", "williams", "taylor", "brown", "davies", "evans", "wilson", "thomas", "johnson",
    "roberts", "robinson", "thompson", "wright", "walker", "white", "edwards", "hughes", "green", "hall",
    "lewis", "harris", "clarke", "patel", "jackson", "wood", "turner", "martin", "cooper", "hill", "ward",
    "morris", "moore", "clark", "lee", "king", "baker", "harrison", "morgan", "allen", "james", "scott",
    "phillips", "watson", "davis", "parker", "price", "bennett", "young", "griffiths", "mitchell",
    "kelly", "cook", "carter", "richardson", "bailey", "collins", "bell", "shaw", "murphy", "miller",
    "cox", "richards", "khan", "marshall", "anderson", "simpson", "ellis", "adams", "singh", "begum",
    "wilkinson", "foster", "chapman", "powell", "webb", "rogers", "gray", "mason", "ali", "hunt",
    "hussain", "campbell", "matthews", "owen", "palmer", "holmes", "mills", "barnes", "knight", "lloyd",
    "butler", "russell", "barker", "fisher", "stevens", "jenkins", "murray", "dixon", "harvey", "okafor",
)
#: personal email domains; gmail.com first: its addresses get dot / plus / googlemail variants
_DOMAINS = ("gmail.com", "hotmail.co.uk", "outlook.com", "yahoo.co.uk", "btinternet.com", "icloud.com",
            "sky.com", "live.co.uk", "aol.com")
_DOMAIN_SHARE = (0.40, 0.12, 0.12, 0.10, 0.06, 0.08, 0.04, 0.04, 0.04)
#: a typo'd domain per domain, index-aligned with _DOMAINS
_DOMAIN_TYPOS = ("gmial.com", "hotmial.co.uk", "outlok.com", "yaho.co.uk", "btinternet.co", "icloud.co",
                 "sky.co", "live.co.k", "ao.com")
_PLUS_TAGS = ("shop", "news", "promo", "store", "deals", "x")
JUNK_EMAILS = ("noemail@none.com", "test@test.com")
JUNK_PHONES = ("00000000000", "07000000000")
#: written forms of a UK mobile ("#" = the 10 national digits 7xxxxxxxxx); all normalise to 44 7xxxxxxxxx
_PHONE_TEMPLATES = ("+44 #### ######", "0#### ######", "0044-####-######", "(0####) ### ###",
                    "0##########", "+44##########", "44##########")
_PHONE_TEMPLATE_SHARE = (0.25, 0.25, 0.08, 0.08, 0.20, 0.10, 0.04)
_CARD_TEMPLATES = ("################", "#### #### #### ####", "####-####-####-####")
_CARD_TEMPLATE_SHARE = (0.6, 0.25, 0.15)
_CARD_PREFIX = 6345_0000_0000_0000


# ---------------------------------------------------------------------------- knobs
@dataclass(frozen=True)
class SynthParams:
    """Knobs of the simulated world. The defaults give the documented volumes (about 25 M
    order lines per million persons); tests raise the rare rates so that a small run still
    holds every trap."""

    existing_base_share: float = 0.45
    monthly_cohort_growth: float = 0.04
    mean_days_between_orders: float = 40.0
    #: gamma shape of the purchase rate: below 1 gives a long tail of heavy buyers
    purchase_rate_shape: float = 0.7
    mean_lifetime_days: float = 900.0
    dropout_rate_shape: float = 1.5
    extra_lines_per_order: float = 1.5
    #: mean days after acquisition before a non-core category is adopted
    category_adoption_days: float = 240.0
    return_rate: float = 0.005
    pos_share: float = 0.84
    web_share: float = 0.55
    app_share: float = 0.35
    crm_share: float = 0.64
    second_card_share: float = 0.05
    duplicate_crm_share: float = 0.04
    alt_email_share: float = 0.06
    mean_response_propensity: float = 0.04
    #: share of email-carrying records whose email has a typo (breaks the link)
    typo_email_rate: float = 0.015
    #: share of persons sharing an app/web device with 1-2 others of their household
    shared_device_share: float = 0.01
    #: share of CRM records carrying a junk email and/or phone
    junk_identifier_rate: float = 0.005
    #: share of persons whose phone number is later given to another person
    recycled_phone_rate: float = 0.002
    duplicate_identity_rate: float = 0.003
    # bad transaction rows (the loader must quarantine exactly these)
    null_customer_id_rate: float = 1e-4
    nan_amount_rate: float = 1e-4
    duplicate_line_rate: float = 1e-4
    # text-level problems, CSV only
    bad_timestamp_rate: float = 1e-4
    bad_amount_rate: float = 1e-4
    # ground-truth response to offers (truth/response/): per person and category, the
    # chance to buy in the category within the horizon without and with an offer for it
    #: days after the contact in which a purchase counts (the synthetic catalog's horizon_days)
    response_horizon_days: int = 28
    #: shares of the uplift kinds over persons x categories; they must sum to 1
    persuadable_share: float = 0.15
    sure_thing_share: float = 0.10
    lost_cause_share: float = 0.68
    sleeping_dog_share: float = 0.07

    def __post_init__(self) -> None:
        shares = self.uplift_shares
        if any(not 0.0 <= s <= 1.0 for s in shares) or abs(sum(shares) - 1.0) > 1e-9:
            raise ValueError("persuadable_share, sure_thing_share, lost_cause_share and sleeping_dog_share "
                             f"must be within 0..1 and sum to 1, got {shares}")
        if not 1 <= self.response_horizon_days <= 365:
            raise ValueError(f"response_horizon_days must be within 1..365, got {self.response_horizon_days}")

    @property
    def uplift_shares(self) -> tuple[float, float, float, float]:
        """Shares of the kinds, in ``UPLIFT_KINDS`` order."""
        return (self.persuadable_share, self.sure_thing_share, self.lost_cause_share, self.sleeping_dog_share)
