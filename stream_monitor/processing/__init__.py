"""The runtime-agnostic layer between a runtime's records and the pure core.

Per input partition: the deterministic merge of its two streams (`merge`), the `Monitor` and
where each stream stands (`partition`), the signed changelog records of its state and their
restore (`changelog`), and the outputs a predecessor already made visible (`outputs`). The
confluent-kafka runtime, the Faust runtime and offline replay all drive it, so a fix to ordering,
state or de-duplication lives in one place. Nothing here imports a Kafka client.
"""
