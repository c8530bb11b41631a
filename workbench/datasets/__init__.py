"""Deterministic synthetic data sets: biographies + QA, IOI, greater-than, topics, and their mix."""

from workbench.datasets.biographies import RELATIONS, Person, QAExample
from workbench.datasets.greater_than import GreaterThanPrompt
from workbench.datasets.ioi import IOIPrompt
from workbench.datasets.topics import TOPICS, TopicPassage
from workbench.datasets.world import World, WorldConfig, load_world, synthesize

__all__ = ["RELATIONS", "TOPICS", "GreaterThanPrompt", "IOIPrompt", "Person", "QAExample", "TopicPassage",
           "World", "WorldConfig", "load_world", "synthesize"]
