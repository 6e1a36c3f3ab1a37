from django.urls import path

from annotate import arena_views, views

app_name = "annotate"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("judge/", views.judge, name="judge"),
    path("mine/", views.mine, name="mine"),
    path("mine/<int:pk>/", views.change, name="change"),
    path("campaigns/", views.campaigns, name="campaigns"),
    path("campaigns/<int:pk>/", views.campaign, name="campaign"),
    path("campaigns/<int:pk>/judges/", views.campaign_judges, name="campaign-judges"),
    path("campaigns/<int:pk>/judge/", views.campaign_judge, name="campaign-judge"),
    path("campaigns/<int:pk>/route/", views.campaign_route, name="campaign-route"),
    path("campaigns/<int:pk>/judges/new/", views.judge_new, name="judge-new"),
    path("arena/<int:pk>/", arena_views.arena_page, name="arena"),
    path("arena/conversations/<int:pk>/continue/", arena_views.turn_continue, name="arena-continue"),
    path("arena/turns/<int:pk>/", arena_views.turn_fragment, name="arena-turn"),
    path("arena/turns/<int:pk>/stream/", arena_views.turn_stream, name="arena-stream"),
    path("arena/turns/<int:pk>/vote/", arena_views.turn_vote, name="arena-vote"),
    path("arena/turns/<int:pk>/stop/", arena_views.turn_stop, name="arena-stop"),
    path("arena/turns/<int:pk>/regenerate/", arena_views.turn_regenerate, name="arena-regenerate"),
]
