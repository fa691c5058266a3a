#!/usr/bin/env python3
"""The fine-tuning demo's data: extract a person's name, age and city from a sentence as one line of
JSON in a fixed shape, {"name": "...", "age": N, "city": "..."}. SmolLM2-135M-Instruct answers in prose
or in some other JSON; after a few minutes of LoRA it answers in the format. Run from the repo root:

    python3 scripts/make-finetune-demo.py

Writes Tests/TrainingTests/Fixtures/json-extract/{train,val,test}.jsonl as {"messages": [...]}. The test
split is held out: names, cities and sentence wordings that never occur in training.
"""
import json
import random

OUT = "Tests/TrainingTests/Fixtures/json-extract"
INSTRUCTION = "Extract the person's name, age and city as JSON."

TRAIN_NAMES = ["Alice", "Bruno", "Chen", "Dmitri", "Elena", "Farah", "Gustav", "Hana", "Ibrahim", "Julia", "Kofi", "Lena",
               "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Ursula", "Viktor", "Wen", "Yusuf",
               "Adele", "Boris", "Clara", "Dario", "Edith", "Fatima", "Goran", "Helga", "Ivan", "Jasmine", "Kenji", "Leila",
               "Marek", "Nina", "Olga", "Pablo", "Rania", "Stefan", "Tomas", "Uma", "Vera", "Walter", "Ximena", "Yara",
               "Zoltan", "Anil", "Beatriz", "Cyrus", "Dana", "Emil", "Freya", "Gideon", "Hiro", "Irene", "Jamal", "Kira",
               "Lorenzo", "Mei", "Nikolai", "Odette", "Pedro", "Rashid", "Sofia", "Timo", "Valentina", "Wojciech", "Yuki", "Zara"]
TEST_NAMES = ["Amara", "Bjorn", "Carmen", "Diego", "Esther", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Keiko", "Luis"]
TRAIN_CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Cairo", "Denver", "Madrid", "Hanoi", "Quito", "Perth", "Dublin",
                "Munich", "Nairobi", "Seoul", "Toronto", "Lisbon", "Dakar", "Kyoto", "Santiago", "Bergen", "Rabat", "Austin",
                "Seville", "Manila", "Caracas", "Adelaide", "Glasgow", "Zurich", "Kampala", "Taipei", "Montreal", "Krakow",
                "Lyon", "Durban", "Sapporo", "Havana", "Gothenburg", "Muscat", "Phoenix", "Valencia", "Jakarta", "Medellin",
                "Hobart", "Cork", "Geneva", "Mombasa", "Chennai", "Calgary", "Gdansk"]
TEST_CITIES = ["Vienna", "Accra", "Busan", "Bogota", "Helsinki", "Tunis", "Boston", "Porto"]
TRAIN_TEMPLATES = [
    "{name} is {age} years old and lives in {city}.",
    "Meet {name}, a {age}-year-old from {city}.",
    "{name}, aged {age}, has an apartment in {city}.",
    "Living in {city}, {name} just turned {age}.",
    "My neighbour {name} is {age}; she moved here from {city}.",
    "{name} ({age}) works in {city}.",
]
TEST_TEMPLATES = [
    "At {age}, {name} still calls {city} home.",
    "{city} resident {name} celebrated a {age}th birthday yesterday.",
    "The form says: name {name}, age {age}, city {city}.",
]


def example(rng, names, cities, templates):
    name, city, age = rng.choice(names), rng.choice(cities), rng.randint(18, 90)
    sentence = rng.choice(templates).format(name=name, age=age, city=city)
    answer = json.dumps({"name": name, "age": age, "city": city})
    return {"messages": [{"role": "user", "content": f"{INSTRUCTION}\n{sentence}"}, {"role": "assistant", "content": answer}]}


def write(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


rng = random.Random(12)
write(f"{OUT}/train.jsonl", [example(rng, TRAIN_NAMES, TRAIN_CITIES, TRAIN_TEMPLATES) for _ in range(320)])
write(f"{OUT}/val.jsonl", [example(rng, TRAIN_NAMES, TRAIN_CITIES, TRAIN_TEMPLATES) for _ in range(32)])
test = random.Random(99)
write(f"{OUT}/test.jsonl", [example(test, TEST_NAMES, TEST_CITIES, TEST_TEMPLATES) for _ in range(60)])
print("wrote", OUT)
