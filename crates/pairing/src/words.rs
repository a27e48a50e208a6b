//! The 256 words of short codes: one byte each. Short, common, easy to say
//! and spell, and no two alike in their first three letters, so a typo is
//! more likely to be a non-word than another word.

/// One word per byte value.
pub const WORDS: [&str; 256] = [
    "acid", "acorn", "actor", "adobe", "aisle", "album", "alley", "amber", "ankle", "apple",
    "apron", "arch", "arena", "arrow", "atlas", "attic", "autumn", "avenue", "axis", "bacon",
    "badge", "bagel", "bamboo", "banjo", "barn", "basket", "beach", "beetle", "bench", "berry",
    "bishop", "boat", "border", "bottle", "bread", "brick", "bubble", "bucket", "bundle", "butter",
    "cabin", "cactus", "camel", "canal", "carpet", "castle", "cedar", "cello", "chalk", "cherry",
    "cider", "circus", "clover", "cobalt", "comet", "copper", "coral", "cotton", "county",
    "coyote", "crayon", "crown", "cube", "cup", "cushion", "dagger", "daisy", "dance", "debut",
    "delta", "denim", "desert", "diamond", "dinner", "dolphin", "donkey", "dove", "dragon", "drum",
    "duck", "dune", "eagle", "easel", "echo", "eclipse", "eel", "egg", "elbow", "elder", "ember",
    "emerald", "engine", "falcon", "fable", "feather", "fence", "fern", "fiddle", "finch", "fjord",
    "flag", "flute", "forest", "fossil", "fox", "frog", "fudge", "gable", "galaxy", "garden",
    "gazelle", "geyser", "ginger", "glacier", "globe", "goblet", "gondola", "gopher", "granite",
    "guitar", "gull", "hammer", "harbor", "hazel", "helmet", "heron", "hickory", "hive", "honey",
    "horizon", "hotel", "hummus", "igloo", "iguana", "indigo", "island", "ivory", "jacket",
    "jaguar", "jasmine", "jelly", "jigsaw", "jungle", "kayak", "kettle", "kiosk", "kitten",
    "koala", "ladder", "lagoon", "lantern", "lava", "lemon", "lentil", "library", "lilac", "linen",
    "lobster", "locket", "lotus", "lumber", "magnet", "mango", "maple", "marble", "meadow",
    "melon", "mirror", "mitten", "molar", "monsoon", "mosaic", "muffin", "museum", "napkin",
    "nectar", "needle", "nest", "nickel", "noodle", "north", "nutmeg", "oasis", "ocean", "olive",
    "onion", "opal", "orbit", "orchid", "otter", "oven", "owl", "paddle", "palace", "panda",
    "paper", "parrot", "pebble", "pelican", "pepper", "piano", "pickle", "pillow", "pine",
    "planet", "plum", "pocket", "pond", "poppy", "pretzel", "pumpkin", "puzzle", "quarry", "quill",
    "rabbit", "radish", "raft", "raven", "reef", "ribbon", "river", "robin", "rocket", "saddle",
    "salmon", "sandal", "satin", "scarf", "seal", "shadow", "silver", "sketch", "sparrow",
    "spider", "squash", "statue", "summit", "sunset", "swan", "table", "tango", "teapot", "temple",
    "thistle", "thunder", "tiger", "timber", "tomato", "tulip", "tundra", "turtle", "valley",
    "velvet", "violet", "volcano", "walnut",
];
