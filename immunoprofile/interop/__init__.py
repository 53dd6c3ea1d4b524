"""Exchange with other tools: FlowJo workspaces, openCyto templates, flowkit,
FlowCytometryTools-like objects, AnnData and FCS export of populations."""
