//! Container IDs and names as Docker makes them: 64 hex digits whose 12-digit short form is
//! never all digits, names matching `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, random names `adjective_name`.

use rand::Rng;

use crate::error::{Error, Result};

/// A new random container ID.
pub fn new_id() -> String {
    loop {
        let bytes: [u8; 32] = rand::random();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Docker: a short ID of digits only could be read as a number (and be ambiguous).
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

/// Checks a user-given name (a leading `/` is accepted, as Docker does, and dropped).
pub fn validate_name(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut bytes = bare.bytes();
    let ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bare.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(bare.to_string())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

const ADJECTIVES: &[&str] = &[
    "admiring",
    "adoring",
    "affectionate",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "beautiful",
    "blissful",
    "bold",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "condescending",
    "confident",
    "cool",
    "cranky",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "flamboyant",
    "focused",
    "friendly",
    "frosty",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "great",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "intelligent",
    "interesting",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "mystifying",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "recursing",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

const SURNAMES: &[&str] = &[
    "agnesi",
    "albattani",
    "allen",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bassi",
    "bell",
    "bhabha",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "brahmagupta",
    "brattain",
    "burnell",
    "cannon",
    "carson",
    "cartwright",
    "chandrasekhar",
    "chaplygin",
    "chebyshev",
    "clarke",
    "cohen",
    "curie",
    "darwin",
    "davinci",
    "dijkstra",
    "dirac",
    "easley",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "germain",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hertz",
    "hodgkin",
    "hopper",
    "hypatia",
    "jackson",
    "jemison",
    "johnson",
    "joliot",
    "kalam",
    "kapitsa",
    "keller",
    "kepler",
    "khorana",
    "knuth",
    "kowalevski",
    "lamarr",
    "lamport",
    "leakey",
    "leavitt",
    "lovelace",
    "lumiere",
    "margulis",
    "maxwell",
    "mayer",
    "mccarthy",
    "mcclintock",
    "meitner",
    "mendel",
    "mirzakhani",
    "morse",
    "napier",
    "nash",
    "newton",
    "nobel",
    "noether",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "ramanujan",
    "ride",
    "ritchie",
    "rosalind",
    "saha",
    "shannon",
    "shockley",
    "sinoussi",
    "stonebraker",
    "swanson",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "varahamihira",
    "volhard",
    "wescoff",
    "wiles",
    "williams",
    "wilson",
    "wing",
    "wright",
    "wu",
    "yalow",
    "yonath",
];

/// A random `adjective_surname`; after collisions the caller asks again with `retry > 0`, which
/// appends a digit as Docker does.
pub fn random_name(retry: u32) -> String {
    let mut rng = rand::rng();
    loop {
        let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
        let surname = SURNAMES[rng.random_range(0..SURNAMES.len())];
        // Docker's one exception: Steve Wozniak is not boring.
        if adjective == "boring" && surname == "wozniak" {
            continue;
        }
        let mut name = format!("{adjective}_{surname}");
        if retry > 0 {
            name.push_str(&rng.random_range(0..10).to_string());
        }
        return name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_with_a_non_numeric_short_form() {
        for _ in 0..100 {
            let id = new_id();
            assert_eq!(id.len(), 64);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(!id[..12].bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn names_follow_dockers_rules() {
        assert_eq!(validate_name("web").unwrap(), "web");
        assert_eq!(validate_name("/web-1.a_b").unwrap(), "web-1.a_b");
        for bad in ["", "a", "-web", "_x", "we b", "wéb", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for retry in [0, 1] {
            let name = random_name(retry);
            validate_name(&name).unwrap();
            assert!(name.contains('_'));
        }
    }
}
