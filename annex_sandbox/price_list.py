"""The Price List API, answered from a catalogue file (moto has none; see the server's module notes, 4.).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

LOG = logging.getLogger("annex_sandbox")

PRICE_LIST_ENV = "ANNEX_EMULATOR_PRICE_LIST"
PRICE_LIST_TARGET = "AWSPriceListService"
PRICE_LIST_FORMAT = "aws_v1"
EC2_SERVICE_CODE = "AmazonEC2"
# AWS's codes for the on-demand offer term and for its hourly rate, the same in every EC2 product.
ON_DEMAND_TERM_CODE = "JRTCKXETXF"
HOURLY_RATE_CODE = "6YS6EN2CT7"
MAX_RESULTS = 100  # GetProducts' MaxResults is 1..100
FILTER_TYPES = ("TERM_MATCH", "EQUALS", "CONTAINS", "ANY_OF", "NONE_OF")
# What AWS's JSON-protocol services call moto's IAM refusals.
JSON_AUTH_ERRORS = {
    "AccessDenied": "AccessDeniedException",
    "InvalidClientTokenId": "UnrecognizedClientException",
    "SignatureDoesNotMatch": "InvalidSignatureException",
}
# What every product of the catalogue is: the filters condor-annex (and most tools) ask for.
LINUX_ON_DEMAND = {
    "servicecode": EC2_SERVICE_CODE,
    "servicename": "Amazon Elastic Compute Cloud",
    "locationType": "AWS Region",
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
    "operation": "RunInstances",
    "marketoption": "OnDemand",
}


class PriceListError(Exception):
    """An error answer of the Price List API: its type (``__type``), message and HTTP status."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


def _invalid(message: str) -> PriceListError:
    return PriceListError("InvalidParameterException", message)


class PriceCatalogue:
    """Hourly on-demand Linux prices per region and type, as the Price List API's products.

    Each (region, instance type) is one product, rendered as GetProducts returns it: a JSON
    document with ``product`` (``productFamily``, ``attributes``, ``sku``), ``serviceCode``,
    ``terms.OnDemand.<sku>.<offer term>.priceDimensions.<rate>.pricePerUnit.USD`` (a string with
    ten decimals), ``version`` and ``publicationDate``. The attributes are the ones a Linux,
    shared-tenancy, on-demand instance carries (``LINUX_ON_DEMAND``) plus ``instanceType``,
    ``regionCode`` and ``location``; the rest of a real product's attributes (vCPUs, memory, usage
    type...) are left out. Products come in a fixed order (region, then type).
    """

    def __init__(self, hourly: Mapping[str, Mapping[str, float]], published: datetime | None = None) -> None:
        stamp = published or datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.publication_date = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.version = stamp.strftime("%Y%m%d%H%M%S")
        self.products = [
            self._product(region, itype, float(usd))
            for region, types in sorted(hourly.items())
            for itype, usd in sorted(types.items())
        ]

    @classmethod
    def load(cls, path: Path) -> PriceCatalogue:
        """The catalogue in a JSON file; top-level keys starting with ``_`` are comments (so the
        shipped ``annex_cloud/prices.json`` is a catalogue too). ValueError when malformed."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the price list {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected {{region: {{instance type: USD per hour}}}}")
        hourly: dict[str, dict[str, float]] = {}
        for region, types in data.items():
            if region.startswith("_"):
                continue
            if not isinstance(types, dict):
                raise ValueError(f"{path}: {region!r} must map instance types to USD per hour")
            for itype, usd in types.items():
                if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd <= 0:
                    raise ValueError(f"{path}: {region} {itype}: {usd!r} is not a price in USD per hour")
            hourly[region] = {str(t): float(u) for t, u in types.items()}
        published = datetime.fromtimestamp(int(path.stat().st_mtime), tz=timezone.utc)
        return cls(hourly, published)

    def _product(self, region: str, itype: str, usd: float) -> dict[str, Any]:
        sku = base64.b32encode(hashlib.sha256(f"{region}/{itype}".encode()).digest()).decode()[:16]
        term = f"{sku}.{ON_DEMAND_TERM_CODE}"
        rate = f"{term}.{HOURLY_RATE_CODE}"
        attributes = dict(LINUX_ON_DEMAND, instanceType=itype, regionCode=region)
        location = _price_list_location(region)
        if location:
            attributes["location"] = location
        return {
            "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
            "serviceCode": EC2_SERVICE_CODE,
            "terms": {
                "OnDemand": {
                    term: {
                        "priceDimensions": {
                            rate: {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd:g} per On Demand Linux {itype} Instance Hour",
                                "appliesTo": [],
                                "rateCode": rate,
                                "beginRange": "0",
                                "pricePerUnit": {"USD": f"{usd:.10f}"},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": self.publication_date,
                        "offerTermCode": ON_DEMAND_TERM_CODE,
                        "termAttributes": {},
                    }
                }
            },
            "version": self.version,
            "publicationDate": self.publication_date,
        }

    def attribute_names(self) -> list[str]:
        return sorted({name for product in self.products for name in product["product"]["attributes"]})

    def get_products(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """GetProducts: the products matching every filter, one page of them, and the next token."""
        service_code = request.get("ServiceCode")
        if not isinstance(service_code, str) or not service_code:
            raise _invalid("ServiceCode is required")
        _format_version(request)
        filters = _filters(request.get("Filters"))
        limit = _max_results(request.get("MaxResults"))
        query = hashlib.sha256(json.dumps([service_code, filters], sort_keys=True).encode()).hexdigest()[:16]
        start = _token_offset(request.get("NextToken"), query)
        matching = [p for p in self.products if p["serviceCode"] == service_code and _matches(p, filters)]
        page = matching[start:start + limit]
        answer: dict[str, Any] = {"FormatVersion": PRICE_LIST_FORMAT, "PriceList": [json.dumps(p) for p in page]}
        if start + limit < len(matching):
            answer["NextToken"] = _token(start + limit, query)
        return answer

    def describe_services(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """DescribeServices: AmazonEC2 (the one service the catalogue has) and its attribute names."""
        _format_version(request)
        _max_results(request.get("MaxResults"))
        service_code = request.get("ServiceCode")
        services = []
        if service_code in (None, "", EC2_SERVICE_CODE):
            services.append({"ServiceCode": EC2_SERVICE_CODE, "AttributeNames": self.attribute_names()})
        return {"FormatVersion": PRICE_LIST_FORMAT, "Services": services}


def _price_list_location(region: str) -> str | None:
    """The Price List's ``location`` of a region: botocore's region description, except that the
    Price List still says "EU (Ireland)" where botocore says "Europe (Ireland)"."""
    description = _region_descriptions().get(region)
    if description and description.startswith("Europe ("):
        return "EU (" + description[len("Europe ("):]
    return description


@functools.lru_cache(maxsize=1)
def _region_descriptions() -> dict[str, str]:
    import botocore.session

    return {
        region: str(data["description"])
        for partition in botocore.session.get_session().get_data("endpoints").get("partitions", [])
        for region, data in partition.get("regions", {}).items()
        if data.get("description")
    }


def _format_version(request: Mapping[str, Any]) -> None:
    if request.get("FormatVersion", PRICE_LIST_FORMAT) != PRICE_LIST_FORMAT:
        raise _invalid(f"FormatVersion must be {PRICE_LIST_FORMAT}")


def _max_results(value: Any) -> int:
    if value is None:
        return MAX_RESULTS
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RESULTS:
        raise _invalid(f"MaxResults must be between 1 and {MAX_RESULTS}")
    return value


def _filters(value: Any) -> list[tuple[str, str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("Filters must be a list")
    filters = []
    for item in value:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("Type", "Field", "Value")):
            raise _invalid("Each filter needs Type, Field and Value")
        if item["Type"] not in FILTER_TYPES:
            raise _invalid(f"Filter type {item['Type']!r} is not one of {', '.join(FILTER_TYPES)}")
        filters.append((item["Type"], item["Field"], item["Value"]))
    return filters


def _matches(product: Mapping[str, Any], filters: list[tuple[str, str, str]]) -> bool:
    """Every filter holds. ``ServiceCode`` is a field too; a product lacking the attribute fails
    the filter (NONE_OF too). TERM_MATCH and EQUALS compare exactly, CONTAINS is a substring,
    ANY_OF and NONE_OF take a comma-separated list of values."""
    attributes = product["product"]["attributes"]
    for kind, field, wanted in filters:
        actual = product["serviceCode"] if field == "ServiceCode" else attributes.get(field)
        if actual is None:
            return False
        choices = {v.strip() for v in wanted.split(",")}
        holds = {
            "TERM_MATCH": actual == wanted,
            "EQUALS": actual == wanted,
            "CONTAINS": wanted in actual,
            "ANY_OF": actual in choices,
            "NONE_OF": actual not in choices,
        }[kind]
        if not holds:
            return False
    return True


def _token(offset: int, query: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset, "query": query}).encode()).decode()


def _token_offset(token: Any, query: str) -> int:
    """Where a page starts: 0 without a token; a token only continues the query that issued it."""
    if token is None:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        offset = decoded["offset"]
        same_query = decoded["query"] == query
    except (ValueError, TypeError, KeyError):
        same_query, offset = False, None
    if not same_query or not isinstance(offset, int) or offset < 0:
        raise PriceListError(
            "InvalidNextTokenException", "The pagination token is invalid. Try again without a pagination token.")
    return offset


def price_list_app(catalogue: PriceCatalogue) -> Any:
    """A WSGI app answering the Price List API from ``catalogue``, built as moto builds a service's.

    Requests go through moto's ``BaseResponse`` (so IAM enforcement checks the signature and the
    action, ``pricing:GetProducts`` or ``pricing:DescribeServices``, against resource ``*``, as
    AWS does; refusals come back as ``AccessDeniedException`` and the like, in JSON) and moto's
    request normalisation and recorder. Other Price List operations answer 501 with a message
    saying the emulator does not have them.
    """
    from flask import Flask
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import BaseResponse
    from moto.core.utils import convert_to_flask_response
    from moto.moto_server.werkzeug_app import BackendRequest
    from werkzeug.exceptions import HTTPException

    headers = {"Content-Type": "application/x-amz-json-1.1"}

    class PriceListResponse(BaseResponse):
        def __init__(self) -> None:
            super().__init__(service_name="pricing")

        def call_action(self) -> Any:
            action = self._get_action()
            if action not in ("GetProducts", "DescribeServices"):
                return 501, dict(headers), json.dumps({
                    "__type": "NotImplemented",
                    "message": "the local emulator's Price List API answers GetProducts and DescribeServices,"
                               f" not {action}",
                })
            return super().call_action()

        def _authenticate_and_authorize_normal_action(self, resource: str = "*") -> None:
            """moto's IAM enforcement, its refusals worded as a JSON-protocol service words them
            (moto answers every service's in XML, which botocore reads as a bare HTTP 403)."""
            try:
                super()._authenticate_and_authorize_normal_action(resource)
            except HTTPException as exc:
                error_type = getattr(exc, "error_type", None)
                if error_type is None:
                    raise
                error = JsonRESTError(JSON_AUTH_ERRORS.get(error_type, error_type), getattr(exc, "message", ""))
                error.code = exc.code
                raise error from exc

        def _answer(self, operation: Callable[[Mapping[str, Any]], dict[str, Any]]) -> Any:
            try:
                request = json.loads(self.body or "{}")
                if not isinstance(request, dict):
                    raise _invalid("The request body must be a JSON object")
                answer = operation(request)
            except ValueError:
                error = _invalid("The request body is not JSON")
            except PriceListError as exc:
                error = exc
            else:
                LOG.info("price list %s: %s", self._get_action(), _summary(request, answer))
                return json.dumps(answer), dict(headers)
            LOG.info("price list %s: %s", self._get_action(), error.error_type)
            body = json.dumps({"__type": error.error_type, "message": error.message})
            return body, dict(headers, status=error.status, **{"x-amzn-ErrorType": error.error_type})

        def get_products(self) -> Any:
            return self._answer(catalogue.get_products)

        def describe_services(self) -> Any:
            return self._answer(catalogue.describe_services)

    app = Flask("annex-price-list")
    app.request_class = BackendRequest
    app.add_url_rule("/", endpoint="price-list", view_func=convert_to_flask_response(PriceListResponse.dispatch),
                     methods=["POST"], strict_slashes=False)
    return app


def _summary(request: Mapping[str, Any], answer: Mapping[str, Any]) -> str:
    """One log line per answer: what was asked and how many products came back."""
    asked = " ".join(f"{f.get('Field')}={f.get('Value')}" for f in request.get("Filters") or [] if isinstance(f, dict))
    if "PriceList" in answer:
        more = ", more" if "NextToken" in answer else ""
        return f"{request.get('ServiceCode')} {asked or '(no filter)'}: products {len(answer['PriceList'])}{more}"
    return f"services {len(answer.get('Services', []))}"


def install_price_list(catalogue: PriceCatalogue) -> None:
    """Put the Price List API (``price_list_app``) in front of moto's dispatcher.

    A request whose ``X-Amz-Target`` is ``AWSPriceListService.*`` (only the Price List's JSON 1.1
    protocol uses that prefix) goes to the catalogue; every other request goes to moto unchanged.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    app = price_list_app(catalogue)
    moto_call = DomainDispatcherApplication.__call__

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(PRICE_LIST_TARGET + "."):
            return app(environ, start_response)
        return moto_call(self, environ, start_response)

    DomainDispatcherApplication.__call__ = __call__  # type: ignore[method-assign]


# Lambda's REST-JSON error names for what moto reports as Query-style XML codes.

def price_catalogue_from_environment(environ: Mapping[str, str]) -> PriceCatalogue | None:
    """The catalogue ``ANNEX_EMULATOR_PRICE_LIST`` names; None (moto's behaviour) when unset.
    A file that is named but unreadable or malformed stops the server: a test would otherwise
    quietly see an unreachable API."""
    path = environ.get(PRICE_LIST_ENV, "")
    if not path:
        return None
    try:
        return PriceCatalogue.load(Path(path))
    except ValueError as exc:
        raise SystemExit(f"{PRICE_LIST_ENV}: {exc}") from exc


