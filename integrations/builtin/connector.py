"""The built-in pipeline for vendors without a CRM: deals live in PartnerHub itself and
vendor users move them through stages (see integrations/builtin/services.py)."""

from integrations.providers.base import Connector, Pipeline, PushResult, Stage


class BuiltinConnector(Connector):
    provider = "builtin"
    batch_size = 100
    rate_limit = (10_000, 1)

    def test_connection(self) -> str:
        return "Built-in pipeline"

    def pipelines(self) -> list[Pipeline]:
        mapping = self.connection.stage_mapping
        return [Pipeline("builtin", "PartnerHub pipeline", [
            Stage(key, label, closed=mapping.get(key) in ("won", "lost"),
                  won=mapping.get(key) == "won") for key, label in self.connection.stages])]

    def push(self, payloads):
        # The "deal" is the referral itself; nothing leaves PartnerHub.
        return {p.referral_id: PushResult({"deal": p.referral_id}) for p in payloads}

    def changes_since(self, cursor: str):
        return [], cursor
