"""Durable queues: accept durably and answer 202, deliver with the route's policies,
dead-letter what cannot be delivered."""
