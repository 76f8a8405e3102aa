"""A client nobody here wrote: the official MCP Python SDK (`mcp` on PyPI) lists the
gateway's tools and calls one.

    python gateway_client.py URL TOOL ARGUMENTS_JSON

Prints one JSON object: the sorted tool names, and the call's result as the SDK parsed it.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, tool: str, arguments: dict) -> None:
    async with streamable_http_client(url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool(tool, arguments)
            print(
                json.dumps(
                    {
                        "server": init.server_info.name,
                        "protocol": init.protocol_version,
                        "tools": sorted(t.name for t in tools.tools),
                        "result": result.model_dump(mode="json", by_alias=True, exclude_none=True),
                    }
                )
            )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
